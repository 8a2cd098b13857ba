"""The process-event watch (netsql/capture/procevents.py) on the real proc connector:
processes' events reach it, their threads' are dropped by its socket filter."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from netsql.capture import bpf
from netsql.capture.procevents import (
    PROC_EVENT_COMM,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_UID,
    ProcEventsError,
    ProcWatch,
)
from tests.conftest import need

# A process that starts and ends THREADS threads, renaming each, then itself.
THREADS = 2000
CHILD = f"""
import ctypes, threading
libc = ctypes.CDLL(None)
def work():
    libc.prctl(15, b"worker", 0, 0, 0)  # PR_SET_NAME: a COMM event of a thread
for _ in range({THREADS} // 100):
    ts = [threading.Thread(target=work) for _ in range(100)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
libc.prctl(15, b"netsql-child", 0, 0, 0)
"""


def watching() -> ProcWatch:
    need(os.geteuid() == 0, "root (the proc connector)")
    watch = ProcWatch()
    try:
        watch.start()
    except ProcEventsError as exc:
        need(False, f"the proc connector: {exc}")
    return watch


def test_process_events_arrive_and_thread_events_do_not() -> None:
    """A child that makes 2,000 threads (each renamed, then gone): its exec, rename and
    exit are seen; its threads' 6,000 events (clone, rename, exit) never reach Python,
    so the watch reads far fewer messages than that while it runs."""
    watch = watching()
    try:
        before = watch.events
        child = subprocess.Popen([sys.executable, "-c", CHILD])
        assert child.wait(timeout=120) == 0
        deadline = time.monotonic() + 10
        while child.pid not in watch.exited and time.monotonic() < deadline:
            time.sleep(0.01)
        with watch.lock:
            gone = watch.exited.get(child.pid)
        assert gone is not None and gone.exit_ns is not None
        assert gone.comm == "netsql-child"  # the leader's rename (PROC_EVENT_COMM)
        read = watch.events - before
        assert read < THREADS, read  # (this host's other processes' events included)
    finally:
        watch.stop()


def test_the_filter_accepts_exactly_what_feed_reads() -> None:
    """The program, run on event messages as the connector sends them: a process's
    fork, exec, uid, comm and exit pass; a thread's clone, comm and exit, and other
    event types, do not."""
    import struct

    prog = bpf.proc_events_filter(PROC_EVENT_FORK, (PROC_EVENT_EXEC, PROC_EVENT_UID,
                                                    PROC_EVENT_COMM, PROC_EVENT_EXIT))

    def message(what: int, *pids: int) -> bytes:
        event = struct.pack("=IIQ", what, 0, 0) + struct.pack(f"={len(pids)}I", *pids)
        return bytes(16) + bytes(20) + event + bytes(16)

    def accepts(data: bytes) -> bool:
        return run_classic_bpf(prog, data) != 0

    assert accepts(message(PROC_EVENT_FORK, 1, 1, 500, 500))
    assert not accepts(message(PROC_EVENT_FORK, 500, 500, 501, 500))  # a thread
    for what in (PROC_EVENT_EXEC, PROC_EVENT_UID, PROC_EVENT_COMM, PROC_EVENT_EXIT):
        assert accepts(message(what, 700, 700, 0, 0))
        assert not accepts(message(what, 701, 700, 0, 0))  # a thread's
    assert not accepts(message(0x40, 700, 700, 0, 0))  # PROC_EVENT_SID: not read
    assert not accepts(message(0, 0, 0, 0, 0))  # the subscription's acknowledgement


def run_classic_bpf(prog: list[bpf.Insn], data: bytes) -> int:
    """A classic BPF interpreter for the instructions bpf.py emits (loads are
    big-endian, as the kernel's are)."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == bpf.LD_W_ABS:
            a = int.from_bytes(data[k:k + 4], "big")
        elif code == bpf.TAX:
            x = a
        elif code == bpf.JEQ_K:
            pc += jt if a == k else jf
        elif code == bpf.JEQ_X:
            pc += jt if a == x else jf
        elif code == bpf.JA:
            pc += k
        elif code == bpf.RET_K:
            return k
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted here")
