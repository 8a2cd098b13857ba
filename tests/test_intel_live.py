"""Threat intel in the two-namespace lab: a process that resolves a listed subdomain and
connects to it shows up in `flagged` with its pid and the list's name; a process that
resolves and connects to an unlisted look-alike does not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import run_netsql
from tests.netlab import APP_V4, Lab, lab

__all__ = ["lab"]  # the fixture

LOOKALIKE_V4 = "10.77.0.12"  # notbadsite.test in tests/netlab.py


def listener(lab: Lab, address: str, port: int) -> subprocess.Popen[str]:
    return lab.spawn(lab.server, sys.executable, "-c",
                     "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET,"
                     f" socket.SO_REUSEADDR, 1); s.bind(('{address}', {port})); s.listen();"
                     "c = s.accept(); time.sleep(30)")


def client(lab: Lab, name: str) -> tuple[subprocess.Popen[str], int]:
    p = lab.spawn(lab.client, sys.executable, "tests/dnsclient.py", "--connect", "8443",
                  "--hold", "20", f"{name}:A", stdout=subprocess.PIPE)
    assert p.stdout is not None
    first = json.loads(p.stdout.readline())
    assert json.loads(p.stdout.readline())["connected"], name
    return p, int(first["pid"])


def test_flagged_names_the_process_and_the_list(lab: Lab, tmp_path: Path) -> None:
    dbfile = str(tmp_path / "intel.duckdb")
    out = run_netsql("intel", "import", "--sample", "--intel-db", dbfile)
    assert out.returncode == 0, out.stderr
    listener(lab, APP_V4, 8443)
    listener(lab, LOOKALIKE_V4, 8443)
    time.sleep(0.3)
    p = lab.netsql_capture(  # --hold: every query named, however loaded the host
        4, "--hold", "--json", "--intel-db", dbfile, "-e",
        "SELECT seen_in, pid, process, name, address, port, matched, indicator, kind, source "
        "FROM flagged ORDER BY seen_in")
    _, bad = client(lab, "sub.evil.badsite.test")
    _, lookalike = client(lab, "notbadsite.test")
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    # Sockets are read in every namespace: leave out other labs' processes (tests running
    # beside this one); the DNS capture only sees this lab's client namespace.
    every: list[dict[str, Any]] = json.loads(stdout)
    rows = [r for r in every if r["seen_in"] == "dns_queries" or r["pid"] in (bad, lookalike)]
    common = {"pid": bad, "name": "sub.evil.badsite.test", "indicator": "evil.badsite.test",
              "kind": "domain", "source": "sample-domains",
              "matched": "sub.evil.badsite.test"}
    assert len(rows) == 2, rows
    dns, sock = rows
    assert dns == {**common, "seen_in": "dns_queries", "process": dns["process"],
                   "address": None, "port": None}
    assert sock == {**common, "seen_in": "sockets", "process": sock["process"],
                    "address": APP_V4, "port": 8443}
    assert dns["process"].startswith("python") and sock["process"].startswith("python")
    assert lookalike not in {r["pid"] for r in rows}
    assert not any("notbadsite" in json.dumps(r) for r in rows)
