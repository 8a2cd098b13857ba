"""Where the docs and the behaviour disagreed (issue 15 item 13): each behaviour checked
for real, with the sentence of the docs that describes it."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from pathlib import Path

from netsql.cli import main
from netsql.context import Env, ExitStatus
from netsql.tables.flows import TABLE as FLOWS
from tests.conftest import need, netsql_cmd, run_netsql

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_closing_the_pipe_ends_with_sigpipe_as_documented() -> None:
    p = subprocess.Popen(netsql_cmd("--csv", "-e", "SELECT range FROM range(3000000)"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, NETSQL_SOCKET=""))
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline() == b"range\r\n"  # (CSV ends lines with CRLF)
    p.stdout.close()  # `| head -1`
    assert p.wait(timeout=60) == -signal.SIGPIPE  # the shell's 141
    assert p.stderr.read() == b""
    assert "| 141 |" in (DOCS / "cli.md").read_text()


def test_removing_an_unknown_source_removes_nothing_and_exits_1(tmp_path: Path) -> None:
    db = str(tmp_path / "intel.duckdb")

    def intel(*args: str) -> tuple[int, str]:
        env = Env(stdout=io.StringIO(), stderr=io.StringIO())
        code = main(["intel", *args, "--intel-db", db], env)
        return code, env.stderr.getvalue()  # type: ignore[attr-defined]

    assert intel("import", "--sample")[0] == 0
    code, err = intel("remove", "sample-ips", "no-such-list")
    assert code == ExitStatus.ERROR and "no such source: no-such-list" in err
    code, err = intel("remove", "sample-ips")  # it was not removed by the failed call
    assert code == 0 and "removed source 'sample-ips' (3 indicators)" in err
    text = " ".join((DOCS / "intel.md").read_text().split())
    assert "it removes nothing at all, says which (with the closest names) and exits 1" in text


def test_flows_says_dns_is_not_a_flow() -> None:
    assert "DNS over UDP (to or from port 53" in FLOWS.description
    assert "DNS over UDP (to or from port 53" in (DOCS / "tables.md").read_text()


def test_the_capture_notice_names_flows_too() -> None:
    need(os.geteuid() == 0, "live capture needs root")
    r = run_netsql("--capture", "1", "--csv", "--no-header", "-e",
                   "SELECT count(*) >= 0 FROM flows")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "true\n"
    assert r.stderr.splitlines()[0] == "netsql: capturing DNS and flows for 1 s"
