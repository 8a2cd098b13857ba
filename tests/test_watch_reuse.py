"""A refresh reuses the costly process details (command line, user ids) only while they
cannot have changed: an exec shows at once, a new process on a reused pid is read
afresh, and what changes without an exec (argv rewritten in place, setuid) shows within
REUSE_SECONDS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsql import procfs
from netsql.backends import linux_procs as processes
from netsql.collect import Collection, Need, State

CMD = Need(frozenset({"pid", "cmdline", "uid"}))
CHILD = r"""
import os, sys
for line in sys.stdin:
    if line.startswith("exec"):
        os.execv("/bin/sleep", ["sleep", "60"])
    if line.startswith("retitle"):
        # Rewrite our own argv in place, as setproctitle does: nothing exec-related changes.
        f = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        start, end = int(f[45]), int(f[46])
        with open("/proc/self/mem", "r+b") as mem:
            mem.seek(start)
            mem.write(b"retitled".ljust(end - start - 1, b" ") + b"\0")
    if line.startswith("setuid"):
        os.setuid(65534)
    if line.startswith("unshare"):  # a network namespace of its own, without an exec
        import ctypes
        assert ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0
    print("ok", flush=True)
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    p = subprocess.Popen([sys.executable, "-c", CHILD, "original-title"], text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    yield p
    p.kill()
    p.wait()


def tell(p: subprocess.Popen[str], what: str) -> None:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(what + "\n")
    p.stdin.flush()
    if what != "exec":
        assert p.stdout.readline() == "ok\n"


def fingerprint(pid: int) -> tuple[str, ...] | None:
    st = procfs.stat_fields(pid)
    assert st is not None
    return processes._fingerprint(st[1])


def row(state: State, pid: int) -> tuple[str, int]:
    cols = processes.processes(Collection(state=state), Need(CMD.columns, frozenset({pid})))
    assert cols["pid"] == [pid]
    return cols["cmdline"][0], cols["uid"][0]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids whose command line is read from /proc."""
    seen: list[int] = []
    real = processes._cmdline

    def counting(pid: int) -> str | None:
        seen.append(pid)
        return real(pid)

    monkeypatch.setattr(processes, "_cmdline", counting)
    return seen


def test_reused_within_a_watch_and_pruned(reads: list[int],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "REUSE_SECONDS", 600.0)  # however slow this host is
    state = State()
    first = processes.processes(Collection(state=state), CMD)
    n = len(reads)
    assert n >= len(first["pid"]) - 5  # every process read once (a few may be hidden)
    kept = dict(state.caches["processes.reuse"]["cmdline"])
    assert os.getpid() in kept
    again = processes.processes(Collection(state=state), CMD)
    me = again["pid"].index(os.getpid())
    assert again["cmdline"][me] == first["cmdline"][first["pid"].index(os.getpid())]
    now = state.caches["processes.reuse"]["cmdline"]
    for pid in set(reads[n:]) & set(kept):  # read again only after an exec
        assert pid not in now or now[pid][0] != kept[pid][0], pid
    assert os.getpid() not in reads[n:]
    assert set(now) <= set(again["pid"])  # processes gone are forgotten


def test_exec_shows_at_once(child: subprocess.Popen[str], reads: list[int]) -> None:
    state = State()
    assert "original-title" in row(state, child.pid)[0]
    tell(child, "exec")
    # The exe link switches before the new command line is in place: wait until /proc
    # itself shows the exec finished, then netsql must show it on its next read.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/cmdline").read_bytes() != b"sleep\x0060\x00":
        assert time.monotonic() < deadline, "the child never exec'd"
        time.sleep(0.01)
    assert row(state, child.pid)[0] == "sleep 60"


def test_changes_without_exec_show_within_reuse_seconds(
        child: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("setuid needs root")
    monkeypatch.setattr(processes, "REUSE_SECONDS", 0.5)
    state = State()
    assert "original-title" in row(state, child.pid)[0]
    before = fingerprint(child.pid)
    tell(child, "retitle")
    tell(child, "setuid")
    assert fingerprint(child.pid) == before  # so only the time limit can catch these
    time.sleep(0.55)
    cmdline, uid = row(state, child.pid)
    assert cmdline.startswith("retitled") and uid == 65534


def test_hidden_addresses_are_no_fingerprint() -> None:
    hidden = ["S"] * 19 + ["24"] + ["0"] * 3 + ["1", "1", "0"] + ["0"] * 19 + ["0"] * 4
    assert processes._fingerprint(hidden) is None  # not permitted: code 1 1, the rest 0
    st = procfs.stat_fields(os.getpid())
    assert st is not None and processes._fingerprint(st[1]) is not None


def test_a_new_process_on_the_same_pid_is_read_afresh() -> None:
    """Pid reuse cannot be forced; the key's start time is what tells them apart."""
    state = State()
    reuse = processes._Reuse(state.caches, "cmdline", full=False)
    old = ("100", "1", "2", "3", "4", "5", "6", "7")
    assert reuse.get(42, old, lambda pid: "old process") == "old process"
    assert reuse.get(42, old, lambda pid: "not read") == "old process"
    new = ("250", *old[1:])
    assert reuse.get(42, new, lambda pid: "new process") == "new process"
    assert reuse.get(42, None, lambda pid: "hidden") == "hidden"  # nothing kept
    assert 42 not in state.caches["processes.reuse"]["cmdline"]


def test_path_and_namespace_exec_at_once_unshare_within_reuse_seconds(
        child: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The executable and the network namespace are reused too (netsql serve's repeated
    one-liners): an exec shows at once, an unshare (no exec) within REUSE_SECONDS."""
    if os.geteuid() != 0:
        pytest.skip("unshare needs root")
    monkeypatch.setattr(processes, "REUSE_SECONDS", 0.5)
    want = Need(frozenset({"pid", "path", "net_namespace"}), frozenset({child.pid}))
    state = State()

    def seen() -> tuple[str, int]:
        cols = processes.processes(Collection(state=state), want)
        return cols["path"][0], cols["net_namespace"][0]

    path, ns = seen()
    assert path == os.path.realpath(sys.executable) and ns == procfs.own_netns()
    tell(child, "unshare")
    mine = os.stat(f"/proc/{child.pid}/ns/net").st_ino
    assert mine != ns and fingerprint(child.pid) is not None
    deadline = time.monotonic() + 0.5 * 1.1
    while seen()[1] != mine:  # reused until its time is up, then read again
        assert time.monotonic() < deadline + 5, "the new namespace never showed"
        time.sleep(0.05)
    tell(child, "exec")
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/cmdline").read_bytes() != b"sleep\x0060\x00":
        assert time.monotonic() < deadline, "the child never exec'd"
        time.sleep(0.01)
    assert seen()[0] == "/usr/bin/sleep" or seen()[0] == os.path.realpath("/bin/sleep")
