"""A capture changes nothing on the host unless asked; with --hold the host's own
firewall rules still apply (during the capture and after kill -9), job control of
netsql cannot stall DNS, and the rules go when netsql ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import need
from tests.netlab import SERVER_V4, Lab, capturing, lab, wait_for

__all__ = ["lab"]  # the fixture
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rulesets(lab: Lab) -> list[str]:
    return [lab.run(lab.client, *cmd).stdout for cmd in
            (["iptables", "-w", "-S"], ["ip6tables", "-w", "-S"], ["nft", "list", "ruleset"])]


def realtime_threads(pid: int) -> list[str]:
    """Threads of ``pid`` with a real-time scheduling policy (stat field 41)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                policy = int(f.read().rsplit(b")", 1)[1].split()[38])
        except (OSError, IndexError, ValueError):
            continue
        if policy != 0:
            out.append(tid)
    return out


def lookup(lab: Lab, timeout: int = 2) -> bool:
    """One real DNS lookup from the client namespace; True when answered."""
    res = lab.run(lab.client, "dig", "+short", "+tries=1", f"+timeout={timeout}",
                  "@" + SERVER_V4, "api.example.test")
    return "10.77.0.11" in res.stdout


def helper_of(pid: int) -> int:
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return int(wait_for(lambda: subprocess.run(
        ["pgrep", "-P", str(pid), "-f", "netsql.capture.holder"], capture_output=True,
        text=True).stdout.split() or kids.stdout.split())[0])


def test_default_capture_changes_nothing(lab: Lab) -> None:
    need(shutil.which("nft") is not None and shutil.which("iptables") is not None,
         "needs nft (nftables) and iptables")
    before = rulesets(lab)
    p = lab.netsql_capture(3, "--json", "-e",
                           "SELECT pid, attribution FROM dns_queries; "
                           "SELECT held, hold_error FROM capture_stats")
    assert rulesets(lab) == before  # during the capture
    assert realtime_threads(p.pid) == []
    assert lookup(lab)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert rulesets(lab) == before  # and after
    rows, stats = json.loads(out)  # one array per statement
    assert rows and all(r["attribution"] in ("socket", "inferred") for r in rows), rows
    assert stats == [{"held": 0, "hold_error": None}]


def test_hold_keeps_the_hosts_reject_rule(lab: Lab) -> None:
    need(shutil.which("iptables") is not None and shutil.which("dig") is not None,
         "needs iptables and dig")
    assert lookup(lab)
    for tool in ("iptables", "ip6tables"):
        assert lab.run(lab.client, tool, "-w", "-A", "OUTPUT", "-p", "udp", "--dport", "53",
                       "-j", "REJECT").returncode == 0
    p = lab.netsql_capture(30, "--hold", "-e", "SELECT 1", new_session=True)
    rules = lab.hold_rules()
    assert len(rules) == 2 and lab.run(lab.client, "iptables", "-w", "-S", "OUTPUT").stdout \
        .splitlines()[-2:] == rules  # appended: the host's rules come first
    assert not lookup(lab)  # the REJECT still applies during the capture
    helper = helper_of(p.pid)
    os.killpg(p.pid, signal.SIGKILL)  # netsql and its process group, not the helper
    p.wait(timeout=10)
    assert wait_for(lambda: not lab.hold_rules())  # the helper saw netsql go
    assert not lookup(lab)
    # The helper killed with -9 too: its rule stays behind (queue unread, bypassed).
    p2 = lab.netsql_capture(30, "--hold", "-e", "SELECT 1", new_session=True)
    helper = helper_of(p2.pid)
    os.kill(helper, signal.SIGKILL)
    os.killpg(p2.pid, signal.SIGKILL)
    p2.wait(timeout=10)
    assert lab.hold_rules(), "expected the stale rule of a helper killed with -9"
    assert not lookup(lab)  # bypass does not skip the REJECT before it
    for tool in ("iptables", "ip6tables"):
        lab.run(lab.client, tool, "-w", "-D", "OUTPUT", "-p", "udp", "--dport", "53",
                "-j", "REJECT")
    assert lookup(lab)  # the stale rule lets DNS through


def test_job_control_cannot_stall_dns(lab: Lab) -> None:
    need(shutil.which("iptables") is not None and shutil.which("dig") is not None,
         "needs iptables and dig")
    p = lab.netsql_capture(30, "--hold", "--json", "-e",
                           "SELECT count(*) AS n FROM dns_queries WHERE attribution = 'held'",
                           new_session=True)
    assert lookup(lab)
    # Ctrl-Z: SIGTSTP to the foreground group (this group has no terminal, so the
    # kernel ignores SIGTSTP for it: SIGSTOP does what SIGTSTP does on a terminal).
    os.killpg(p.pid, signal.SIGTSTP)
    os.killpg(p.pid, signal.SIGSTOP)
    assert wait_for(lambda: open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0]
                    == "T")
    t0 = time.monotonic()
    assert all(lookup(lab, timeout=1) for _ in range(3))
    assert time.monotonic() - t0 < 2.9
    os.killpg(p.pid, signal.SIGCONT)
    # The helper itself stopped: netsql removes the rule within a second (fail-open).
    helper = helper_of(p.pid)
    os.kill(helper, signal.SIGSTOP)
    try:
        assert wait_for(lambda: not lab.hold_rules(), seconds=5)
        assert lookup(lab, timeout=1)
    finally:
        os.kill(helper, signal.SIGCONT)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=20)
    assert wait_for(lambda: not lab.hold_rules())


def test_sigterm_removes_the_rules(lab: Lab) -> None:
    need(shutil.which("iptables") is not None, "needs iptables")
    p = lab.netsql_capture(30, "--hold", "-e", "SELECT 1")
    assert lab.hold_rules(read=True)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err
    assert wait_for(lambda: not lab.hold_rules())


def test_sigterm_during_start_leaves_nothing(lab: Lab) -> None:
    """SIGTERM at once, while the capture may still be setting itself up."""
    need(shutil.which("iptables") is not None, "needs iptables")
    for delay in (0.25, 0.4, 0.6, 0.9):
        p = lab.spawn(lab.client, sys.executable, "-m", "netsql", "--hold", "--capture",
                      "30", "--netns", lab.client, "-e", "SELECT 1", cwd=ROOT,
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
        assert "Traceback" not in err, err
        assert wait_for(lambda: not lab.hold_rules()), delay
        assert not capturing(p.pid)


FLOOD = f"""
import socket, struct, time
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
for s in socks:
    s.setblocking(False)
name = b"\\x03www\\x07example\\x04test\\x00"
end = time.monotonic() + 2.0
i = 0
while time.monotonic() < end:
    s = socks[i % 16]
    try:
        s.sendto(struct.pack(">HHHHHH", i & 0xFFFF, 0x100, 1, 0, 0, 0) + name
                 + b"\\0\\1\\0\\1", ("{SERVER_V4}", 53))
        i += 1
    except BlockingIOError:
        pass
    try:
        while True:
            s.recv(512)
    except BlockingIOError:
        pass
print(i)
"""


def test_flood_pause_is_counted_and_warned_once(lab: Lab) -> None:
    need(shutil.which("iptables") is not None, "needs iptables")
    p = lab.netsql_capture(6, "--hold", "--json", "-e",
                           "SELECT count(*) AS n FROM dns_queries; "
                           "SELECT count(*) AS n FROM dns_queries; "
                           "SELECT held, hold_passed, hold_paused FROM capture_stats")
    res = lab.run(lab.client, sys.executable, "-c", FLOOD)
    assert res.returncode == 0, res.stderr
    sent = int(res.stdout)
    assert sent > 6000, sent
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    stats = json.loads(out)[-1][0]  # one array per statement: the last one's row
    assert stats["held"] > 0 and stats["hold_passed"] > 0, stats
    assert 2.0 < stats["hold_paused"] <= 10.0, stats
    assert stats["held"] + stats["hold_passed"] >= sent * 0.99, (stats, sent)
    assert err.count("the query hold was paused by a flood") == 1, err


def test_held_shell_losing_its_terminal_cleans_up(lab: Lab) -> None:
    need(shutil.which("iptables") is not None and shutil.which("tmux") is not None,
         "needs iptables and tmux")
    name = "nsql-" + lab.client
    home = os.path.join(lab.tmp, "home")
    os.makedirs(home)
    try:
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "100", "-y", "30",
                        f"cd {ROOT} && HOME={home} PROMPT_TOOLKIT_NO_CPR=1 ip netns exec "
                        f"{lab.client} {sys.executable} -m netsql --hold"], check=True)
        assert wait_for(lambda: lab.hold_rules(read=True)), "the shell's hold never started"
        subprocess.run(["tmux", "kill-session", "-t", name], check=True)
        assert wait_for(lambda: not lab.hold_rules())
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


@pytest.mark.parametrize("asked", [False, True], ids=["default", "NETSQL_HOLD_REALTIME=1"])
def test_the_holds_thread_is_real_time_only_when_asked(lab: Lab, asked: bool,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    need(shutil.which("iptables") is not None and shutil.which("dig") is not None,
         "needs iptables and dig")
    from netsql.capture import holder

    need(holder.COMPILED, "the hold's compiled path is not built")
    if asked:
        monkeypatch.setenv("NETSQL_HOLD_REALTIME", "1")
    else:
        monkeypatch.delenv("NETSQL_HOLD_REALTIME", raising=False)
    p = lab.netsql_capture(8, "--hold", "-e", "SELECT 1")
    helper = helper_of(p.pid)
    assert lookup(lab)  # a held query named: the thread has decided its policy
    assert realtime_threads(p.pid) == []  # netsql itself: never
    if asked:
        assert wait_for(lambda: realtime_threads(helper)), "no real-time thread"
    else:
        assert lookup(lab) and realtime_threads(helper) == []
    p.terminate()
    p.communicate(timeout=30)
