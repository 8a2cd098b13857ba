"""Shared by the benchmarks: timing medians and the busy-host load generator."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def bytecode() -> None:
    """Compile netsql's sources to bytecode first, as an installed package has them: with
    PYTHONDONTWRITEBYTECODE set (as on CI machines) an editable checkout would otherwise
    recompile every changed module in every timed run (15-40 ms)."""
    import compileall

    import netsql

    compileall.compile_dir(os.path.dirname(netsql.__file__), quiet=1)


def median_seconds(fn: Callable[[], Any], runs: int, warmup: bool = True) -> float:
    """Median wall time of ``runs`` calls of ``fn`` (after one untimed call)."""
    if warmup:
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def wall(cmd: list[str] | str, runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall time of a command (output discarded)."""
    return median_seconds(lambda: subprocess.run(cmd, shell=isinstance(cmd, str),
                                                 stdout=subprocess.DEVNULL, check=True,
                                                 env=env), runs)


def traffic_args(ap: argparse.ArgumentParser, rate: int) -> argparse.Namespace:
    """The command line of a benchmark that sends DNS traffic between network namespaces:
    ``ap``'s own flags, --rate (queries a second, default ``rate``) and --seconds (default
    10); ends the benchmark unless it runs as root."""
    ap.add_argument("--rate", type=int, default=rate, help="DNS queries a second")
    ap.add_argument("--seconds", type=float, default=10,
                    help="how long each measurement lasts")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit(f"{ap.prog} needs root (network namespaces, packet capture)")
    return args


@contextmanager
def installed() -> Iterator[str]:
    """The Python of a throw-away venv laid out as a wheel install of netsql is, until the
    block ends: the checkout's netsql and this Python's packages on its path through a
    .pth file of plain paths, and this venv's other .pth files, but not the editable
    install's (its import finder, which imports pathlib, re and more at every start: 3-4
    ms of a one-liner that no installed netsql pays)."""
    import shutil
    import site
    import sysconfig
    import tempfile

    import netsql

    with tempfile.TemporaryDirectory(prefix="netsql-bench-") as tmp:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp], check=True)
        py = os.path.join(tmp, "bin", "python")
        target = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path("
                                 "'purelib'))"], capture_output=True, text=True,
                                check=True).stdout.strip()
        here = sysconfig.get_path("purelib")
        with open(os.path.join(target, "_netsql_bench.pth"), "w") as f:  # (read first)
            f.write(os.path.dirname(os.path.dirname(os.path.abspath(netsql.__file__)))
                    + "\n" + "\n".join([here, *site.getsitepackages()]) + "\n")
        for name in os.listdir(here):
            if name.endswith(".pth") and not name.startswith("__editable__"):
                shutil.copy(os.path.join(here, name), target)
        yield py


@contextmanager
def resident() -> Iterator[dict[str, str]]:
    """A `netsql serve` (no DNS capture) on a private socket until the block ends; the
    environment that makes `netsql -e` use it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "netsql.sock")
        log = open(os.path.join(tmp, "log"), "w+")
        p = subprocess.Popen([sys.executable, "-m", "netsql", "serve", "--no-capture",
                              "--socket", path], stderr=log, stdout=subprocess.DEVNULL)
        try:
            for _ in range(600):  # until it accepts (after its imports and warm-up)
                log.seek(0)
                if "serving on" in log.read():
                    break
                time.sleep(0.05)
            yield dict(os.environ, NETSQL_SOCKET=path)
        finally:
            p.terminate()
            p.wait()
            log.close()


@contextmanager
def loadgen(kind: str, n: int) -> Iterator[None]:
    """benchmarks/loadgen.py running (``sockets`` or ``processes``) until the block ends."""
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "loadgen.py"), kind, str(n)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise SystemExit(f"loadgen {kind} failed")
    try:
        yield
    finally:
        p.terminate()
        p.wait()
