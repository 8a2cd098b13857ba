"""SIGTERM, SIGINT and SIGHUP at any instant, from the first instruction on: netsql ends
with 128 + N (130 for Ctrl-C), and stderr holds nothing or one line, never a traceback
(issue 15 item 18: a nanobind traceback and SIGABRT during DuckDB's import, a silent exit 2
during argument parsing)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "netsql"


LONG = "SELECT sum(i * i) FROM range(3000000000) t(i)"


def spawn(use_script: bool) -> subprocess.Popen[bytes]:
    cmd = [str(SCRIPT)] if use_script and SCRIPT.exists() else [sys.executable, "-m", "netsql"]
    # A statement that outlasts the latest signal (0.15 s after start-up): a command
    # that finished first would exit 0 whatever came after it.
    return subprocess.Popen([*cmd, "-e", LONG], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, NETSQL_SOCKET=""))


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM: Python installs none by itself, so
    netsql's first instruction has run."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone already
    mask = int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("SigCgt:")), 16)
    return bool(mask >> (signal.SIGTERM - 1) & 1)


def wait_for_first_instruction(p: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not catches_sigterm(p.pid) and time.monotonic() < deadline:
        time.sleep(0.001)


# SIGTERM and SIGHUP: 0-150 ms after spawn. SIGINT: 0-150 ms after netsql's first
# instruction (before it, Python's own start-up turns SIGINT into a KeyboardInterrupt in
# site.py, "Fatal Python error: init_import_site", which no code of netsql can catch).
@pytest.mark.parametrize("sig,runs,after_start", [
    (signal.SIGTERM, 80, False), (signal.SIGTERM, 40, True), (signal.SIGINT, 40, True),
    (signal.SIGHUP, 30, False)])
def test_a_signal_at_any_instant(sig: signal.Signals, runs: int, after_start: bool) -> None:
    rng = random.Random(sig * 1000 + runs)
    statuses: Counter[int] = Counter()
    for i in range(runs):
        delay = rng.uniform(0, 0.150)
        p = spawn(use_script=bool(i % 2))
        # Every fourth run waits for netsql's first instruction even when the others
        # race the interpreter's start-up, so both phases are hit however slow the
        # start-up is on a loaded machine.
        if after_start or i % 4 == 3:
            wait_for_first_instruction(p)
        time.sleep(delay)
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
        text = err.decode(errors="replace")
        statuses[p.returncode] += 1
        # -N: killed by the default action before Python ran netsql's first instruction
        # (the interpreter's own start-up); the shell reports it as 128 + N as well.
        assert p.returncode in (128 + sig, -sig), (delay, p.returncode, text)
        assert "Traceback" not in text and "nanobind" not in text, (delay, text)
        assert text.count("\n") <= 1, (delay, text)
    print(f"{sig.name}: {dict(statuses)}")
    assert statuses[128 + sig] > 0
    if after_start:
        assert statuses == {128 + sig: runs}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_statement_ends_it_with_its_status(sig: signal.Signals) -> None:
    """DuckDB turns the exception a handler raises mid-statement into its own
    "Query interrupted": still 128 + N, one line, no traceback."""
    p = spawn(use_script=False)
    wait_for_first_instruction(p)
    deadline = time.monotonic() + 30
    while "duckdb" not in Path(f"/proc/{p.pid}/maps").read_text():  # the statement runs
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)  # inside the long statement (it runs for many seconds)
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 128 + sig, err
    assert "Traceback" not in err.decode() and len(err.decode().splitlines()) <= 1
