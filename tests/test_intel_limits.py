"""`netsql intel import` on hostile input: bounded memory (peak RSS of the child, from
wait4), a one-line error and the database as it was. Inputs are generated, not stored."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import netsql_cmd

LIMIT_MB = 200
# Linux keeps the peak RSS of the process a child was forked from across exec, so a
# child of pytest (hundreds of MB into a full run) would report pytest's: a small
# launcher forks netsql and writes its peak (KB) to argv[1].
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


class Measured:
    def __init__(self, status: int, err: str, peak_mb: float) -> None:
        self.status, self.err, self.peak_mb = status, err, peak_mb


def import_measured(tmp_path: Path, *args: str, feed: Iterator[bytes] | None = None,
                    timeout: float = 300) -> Measured:
    """Run `netsql intel import ARGS` in a child, feeding ``feed`` to its stdin; its exit
    status, stderr and peak resident memory."""
    err_path, rss_path = tmp_path / "stderr", tmp_path / "peak"
    env = dict(os.environ, NETSQL_SOCKET="")
    cmd = [sys.executable, "-c", LAUNCHER, str(rss_path), *netsql_cmd("intel", "import", *args)]
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=env,
                                stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    writer = None
    if feed is not None:
        stdin = proc.stdin
        assert stdin is not None

        def write() -> None:
            try:
                for chunk in feed:
                    stdin.write(chunk)
            except (BrokenPipeError, ValueError):
                pass  # netsql stopped reading: what the test is about
            finally:
                try:
                    stdin.close()
                except BrokenPipeError:
                    pass

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        proc.wait()
    finally:
        timer.cancel()
    if writer is not None:
        writer.join(10)
    return Measured(proc.returncode, err_path.read_text(), int(rss_path.read_text()) / 1024)


def one_line_error(m: Measured, *words: str) -> None:
    assert m.status == 1, m.err
    assert m.err.count("\n") == 1 and m.err.startswith("netsql: error: "), m.err
    assert "Traceback" not in m.err
    for w in words:
        assert w in m.err, m.err


@pytest.fixture
def dbfile(tmp_path: Path) -> Path:
    path = tmp_path / "intel.duckdb"
    seed = tmp_path / "seed.txt"
    seed.write_text("kept.example\n")
    r = subprocess.run(netsql_cmd("intel", "import", str(seed), "--source", "feed",
                                  "--intel-db", str(path)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return path


def unchanged(dbfile: Path) -> bool:
    con = duckdb.connect(str(dbfile), read_only=True)
    try:
        return con.execute("SELECT list(indicator) FROM indicators").fetchone() == (
            ["kept.example"],)
    finally:
        con.close()


def test_gzip_that_expands_to_100mb_streams(tmp_path: Path, dbfile: Path) -> None:
    comment = b"# " + b"x" * 1000 + b"\n"
    gz = tmp_path / "feed.txt.gz"
    with gzip.open(gz, "wb") as f:
        f.write(b"bomb-one.example\n")
        for _ in range(100):
            f.write(comment * 1000)  # 100 MB of lines in all
        f.write(b"bomb-two.example\n")
    assert gz.stat().st_size < 1_000_000
    m = import_measured(tmp_path, str(gz), "--source", "feed", "--intel-db", str(dbfile))
    assert m.status == 0, m.err
    assert "imported 2 indicators" in m.err
    assert m.peak_mb < LIMIT_MB, f"peak {m.peak_mb:.0f} MB"


def test_a_1gb_line_is_refused_in_bounded_memory(tmp_path: Path, dbfile: Path) -> None:
    def one_line() -> Iterator[bytes]:
        block = b"a" * (1 << 20)
        for _ in range(1024):
            yield block
        yield b"\n"

    m = import_measured(tmp_path, "-", "--source", "feed", "--intel-db", str(dbfile),
                        feed=one_line())
    one_line_error(m, "<stdin>:1: a line longer than 65,536 bytes")
    assert m.peak_mb < LIMIT_MB, f"peak {m.peak_mb:.0f} MB"
    assert unchanged(dbfile)


def test_dev_zero_is_refused(tmp_path: Path, dbfile: Path) -> None:
    m = import_measured(tmp_path, "/dev/zero", "--source", "feed", "--intel-db", str(dbfile),
                        timeout=60)
    one_line_error(m, "/dev/zero:1: binary data")
    assert m.peak_mb < LIMIT_MB
    assert unchanged(dbfile)


@pytest.mark.parametrize("fmt", ["auto", "spamhaus-drop"])
def test_deeply_nested_json_is_one_line(tmp_path: Path, dbfile: Path, fmt: str) -> None:
    f = tmp_path / "drop.json"
    f.write_text('{"cidr":"192.0.2.0/24"}\n' + "[" * 60_000 + "]" * 60_000 + "\n")
    m = import_measured(tmp_path, str(f), "--source", "feed", "--format", fmt,
                        "--intel-db", str(dbfile))
    one_line_error(m, str(f))
    assert unchanged(dbfile)


def test_many_indicators_then_a_bad_line_leave_the_database_as_it_was(
        tmp_path: Path, dbfile: Path) -> None:
    f = tmp_path / "big.txt"
    with open(f, "w") as out:
        for i in range(150_000):  # several chunks staged before the bad line
            out.write(f"host{i}.example\n")
        out.write("not_a_domain!\n")
    m = import_measured(tmp_path, str(f), "--source", "feed", "--intel-db", str(dbfile))
    one_line_error(m, f"{f}:150001: not a domain name")
    assert unchanged(dbfile)
    f.write_text("".join(f"host{i % 70_000}.example\n" for i in range(150_000)))
    m = import_measured(tmp_path, str(f), "--source", "feed", "--intel-db", str(dbfile))
    assert m.status == 0, m.err
    assert "imported 70,000 indicators" in m.err and "80,000 duplicates dropped" in m.err
    con = duckdb.connect(str(dbfile), read_only=True)
    try:
        assert con.execute("SELECT count(*), min(line), max(line) FROM indicators").fetchone(
            ) == (70_000, 1, 70_000)  # the first line of each is kept
    finally:
        con.close()


def test_an_import_killed_midway_leaves_the_database_and_its_leftovers_go(
        tmp_path: Path, dbfile: Path) -> None:
    """SIGKILL while lines are being staged: the database is as it was, and the next
    import removes the staging directory the killed one left beside the database."""
    import signal
    import time

    proc = subprocess.Popen(netsql_cmd("intel", "import", "-", "--source", "feed",
                                       "--intel-db", str(dbfile)),
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, NETSQL_SOCKET=""))
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"".join(b"host%d.example\n" % i for i in range(100_000)))
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        stages: list[Path] = []
        while not stages:  # staging has begun (the chunks go there), stdin still open
            stages = list(tmp_path.glob(f".netsql-import-{proc.pid}-*/stage.duckdb"))
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        proc.wait()
    assert unchanged(dbfile)
    assert stages[0].parent.exists()
    again = tmp_path / "again.txt"
    again.write_text("again.example\n")
    r = subprocess.run(netsql_cmd("intel", "import", str(again), "--source", "other",
                                  "--intel-db", str(dbfile)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not stages[0].parent.exists()
    assert not list(tmp_path.glob(".netsql-import-*"))  # its own is gone too
