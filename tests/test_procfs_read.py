"""Reading every process's /proc files at once (procfs.read_many): the compiled reader
(netsql/_cdiag.c, threads without the GIL) against its pure-Python twin, on real
processes; and the processes table read either way."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netsql import procfs
from netsql.backends import linux_procs
from netsql.collect import Collection, Need, State
from tests.conftest import need

#: A pid no process can have (above the kernel's largest, 2**22).
NO_PID = (1 << 22) + 7
FILES = ["stat", "statm", "cmdline", "environ", "comm", "no-such-file", "ns/net"]
LINKS = ["cwd", "exe", "ns/net", "no-such-link"]


def compiled() -> Any:
    need(procfs._cdiag is not None, "the compiled reader (_cdiag) was not built: needs a C "
         "compiler and Python headers at install time")
    return procfs._cdiag


@pytest.fixture
def sleepers(tmp_path: Path) -> Iterator[list[int]]:
    """Processes that change nothing while they live (asleep in pause()): in a
    directory whose name is not UTF-8, one with an environment of more than 64 KiB and
    a long command line (read in several chunks)."""
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9 \xff")
    os.mkdir(odd)
    env = dict(os.environ, **{f"BIG{i}": "x" * 60_000 for i in range(3)})
    pause = "import signal; print('ok', flush=True); signal.pause()"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-c", pause], cwd=odd,
                                      stdout=subprocess.PIPE))
        procs.append(subprocess.Popen([sys.executable, "-c", pause, *["arg"] * 20_000],
                                      env=env, cwd=tmp_path, stdout=subprocess.PIPE))
        for p in procs:  # until each waits in pause(), where nothing of it changes
            assert p.stdout is not None and p.stdout.readline() == b"ok\n"
            deadline = time.monotonic() + 10
            while (procfs.parse_stat(procfs.read_bytes(f"/proc/{p.pid}/stat"))
                   or ("", ["R"]))[1][0] != "S":
                assert time.monotonic() < deadline, "the child never went to sleep"
                time.sleep(0.01)
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


def test_compiled_and_python_read_alike(sleepers: list[int]) -> None:
    cdiag = compiled()
    pids = [*sleepers, NO_PID, 1]
    python = procfs._py_read_many(pids, FILES, LINKS)
    for threads in (1, 2, 3, 8):
        assert cdiag.read_many(pids, FILES, LINKS, threads) == python, threads
    odd, big = python[0], python[1]
    assert odd[len(FILES)] is not None and odd[len(FILES)].endswith("caf\udce9 \udcff")
    environ = big[FILES.index("environ")]
    assert isinstance(environ, bytes) and len(environ) > 150_000  # several 64 KiB reads
    assert python[2] == (None,) * (len(FILES) + len(LINKS))  # no such process
    assert cdiag.read_many([], FILES, LINKS, 2) == []
    assert cdiag.read_many(pids, [], [], 2) == [()] * len(pids)


def test_bad_arguments_are_errors_not_crashes() -> None:
    cdiag = compiled()
    with pytest.raises(ValueError):
        cdiag.read_many([1], ["stat"], [3], 1)
    with pytest.raises(ValueError):
        cdiag.read_many([1], ["a\0b"], [], 1)
    with pytest.raises(ValueError):
        cdiag.read_many([1], ["x" * 300], [], 1)
    with pytest.raises(ValueError):
        cdiag.read_many([1], ["stat"] * 65, [], 1)
    with pytest.raises(TypeError):
        cdiag.read_many(["1"], ["stat"], [], 1)


def test_the_processes_table_reads_alike_compiled_threaded_or_not(
        sleepers: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The columns of processes that do not change, read by the compiled reader on
    several threads (READ_ALONE lowered to reach them) and by the Python twin."""
    compiled()
    stable = ("pid", "ppid", "name", "path", "cmdline", "uid", "state", "start_time", "cwd",
              "threads", "rss", "net_namespace")
    want = Need(frozenset(stable), frozenset([*sleepers, NO_PID]))

    def table() -> list[tuple[Any, ...]]:
        cols = linux_procs.processes(Collection(state=State()), want)
        return sorted(zip(*(cols[k] for k in stable), strict=True))

    monkeypatch.setattr(linux_procs, "READ_ALONE", 1)
    threaded = table()
    monkeypatch.setattr(procfs, "_cdiag", None)
    assert table() == threaded
    assert [row[0] for row in threaded] == sorted(sleepers)  # NO_PID: no row
