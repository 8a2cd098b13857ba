"""osquery-shaped tables, as ratios against `ss` (what a user without osquery runs).

    sudo python benchmarks/bench_osquery.py [--sockets 20000] [--runs 5]

Starts benchmarks/loadgen.py (loopback sockets across several processes), then times
osquery's process_open_sockets and listening_ports end to end (`netsql --local
--osquery`) and as a statement inside one engine, against `ss -tuwxapn` and
`ss -tuwxlpn` (every protocol osquery lists, with owners), and the shipped
incident-response pack end to end. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import bytecode, loadgen, median_seconds, wall  # noqa: E402

PY = sys.executable


def row(what: str, ours: float, theirs: float, baseline: str) -> str:
    return f"| {what} | {ours:.3f} s | {baseline} {theirs:.3f} s | {ours / theirs:.2f}x |"


def main() -> None:
    bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    from netsql.engine import Engine
    from netsql.osquery.dialect import set_mode

    out = ["| what | netsql | baseline | ratio |", "| --- | --- | --- | --- |"]
    with loadgen("sockets", a.sockets):
        ss_all = wall("ss -tuwxapn", a.runs)
        ss_listen = wall("ss -tuwxlpn", a.runs)
        q1 = "SELECT * FROM process_open_sockets"
        q2 = "SELECT * FROM listening_ports"
        for q, base, name in ((q1, ss_all, "`ss -tuwxapn`"), (q2, ss_listen, "`ss -tuwxlpn`")):
            cmd = [PY, "-m", "netsql", "--local", "--osquery", "--csv", "-e", q]
            out.append(row(f"`{q}`, end to end", wall(cmd, a.runs), base, name))
        eng = Engine()
        set_mode(eng, True)
        for q, base, name in ((q1, ss_all, "`ss -tuwxapn`"), (q2, ss_listen, "`ss -tuwxlpn`")):
            out.append(row(f"`{q}`, statement in a shell",
                           median_seconds(lambda q=q: list(eng.run(q)), a.runs), base, name))
        pack = [PY, "-m", "netsql", "--pack", "incident-response", "--format", "jsonl"]
        out.append(row("incident-response pack, end to end", wall(pack, a.runs), ss_all,
                       "`ss -tuwxapn`"))
    print("\n".join(out))


if __name__ == "__main__":
    main()
