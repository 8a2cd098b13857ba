"""A live capture leaves nothing behind: the query-hold rules go when netsql ends,
whether it is quit, sent SIGTERM, or loses its terminal (SIGHUP)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from tests.conftest import need

T = TypeVar("T")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hold_rules() -> list[str]:
    out = subprocess.run(["iptables", "-w", "-S", "OUTPUT"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "netsql-hold" in line]


def queue_of(pid: int) -> str | None:
    """The NFQUEUE number netsql process ``pid`` reads (its netlink port id is its pid)."""
    with open("/proc/net/netfilter/nfnetlink_queue") as f:
        for line in f:
            fields = line.split()
            if fields and int(fields[1]) == pid:
                return fields[0]
    return None


def wait_for(check: Callable[[], T], seconds: float = 10.0) -> T:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    return check()


def test_sigterm_removes_the_rules() -> None:
    need(os.geteuid() == 0 and shutil.which("iptables") is not None,
         "needs root and iptables")
    p = subprocess.Popen([sys.executable, "-m", "netsql", "--capture", "30", "-e", "SELECT 1"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    queue = wait_for(lambda: queue_of(p.pid))
    assert queue, "the capture never bound its queue"
    assert wait_for(lambda: any(f"--queue-num {queue} " in r for r in hold_rules()))
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err
    assert not any(f"--queue-num {queue} " in r for r in hold_rules())


def test_shell_losing_its_terminal_cleans_up() -> None:
    need(os.geteuid() == 0 and shutil.which("iptables") is not None
         and shutil.which("tmux") is not None, "needs root, iptables and tmux")
    name = "nsql-" + uuid.uuid4().hex[:6]
    home = f"/tmp/{name}"
    os.makedirs(home)
    try:
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "100", "-y", "30",
                        f"cd {ROOT} && HOME={home} PROMPT_TOOLKIT_NO_CPR=1 "
                        f"{sys.executable} -m netsql"], check=True)
        pane = int(subprocess.run(["tmux", "list-panes", "-t", name, "-F", "#{pane_pid}"],
                                  capture_output=True, text=True).stdout.split()[0])

        def shell_queue() -> str | None:
            children = subprocess.run(["pgrep", "-P", str(pane)], capture_output=True,
                                      text=True).stdout.split()
            for pid in [pane, *map(int, children)]:
                q = queue_of(pid)
                if q:
                    return q
            return None

        queue = wait_for(shell_queue)
        assert queue and wait_for(
            lambda: any(f"--queue-num {queue} " in r for r in hold_rules()))
        subprocess.run(["tmux", "kill-session", "-t", name], check=True)
        assert wait_for(lambda: not any(f"--queue-num {queue} " in r for r in hold_rules()))
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_sigterm_during_start_leaves_nothing() -> None:
    """SIGTERM at once, while the capture may still be setting itself up."""
    need(os.geteuid() == 0 and shutil.which("iptables") is not None,
         "needs root and iptables")
    before = set(hold_rules())
    for delay in (0.25, 0.35, 0.45):
        p = subprocess.Popen([sys.executable, "-m", "netsql", "--capture", "30", "-e",
                              "SELECT 1"], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=10)
        assert "Traceback" not in err
    # Rules of other netsql processes running now (their queue is read) may come and
    # go; a rule whose queue nobody reads was left behind.
    from netsql.capture.hold import bound_queues

    live = bound_queues()
    left = [r for r in hold_rules() if r not in before
            and int(r.split("--queue-num ")[1].split()[0]) not in live]
    assert left == []
