"""Run inside fresh network and pid namespaces (tests/test_backends.py starts it): start
probe processes with TCP listeners, connected pairs, UDP sockets, sockets shared after
fork, a closed socket no process holds and another user's process; read the host
tables with the native backend, then psutil, then native again; print the rows as JSON.

In namespaces of its own nothing else comes or goes, so the two backends read one
state (only counters of traffic, such as IPv6 neighbour discovery, can move: the
second native read brackets them).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

TABLES = ("processes", "sockets", "listening_ports", "interfaces")

SERVER = r"""
import os, signal, socket, sys
os.chdir(sys.argv[1])
held = []
def listen(family, addr):
    s = socket.socket(family)
    s.bind((addr, 0))
    s.listen(8)
    held.append(s)
    return s
v4, v6, anyv4 = listen(socket.AF_INET, "127.0.0.1"), listen(socket.AF_INET6, "::1"), \
    listen(socket.AF_INET, "0.0.0.0")
shared = listen(socket.AF_INET, "127.0.0.2")
held.append(socket.socket(fileno=os.dup(v4.fileno())))  # two descriptors, one socket
for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::"),
                     (socket.AF_INET6, "::1")):
    u = socket.socket(family, socket.SOCK_DGRAM)
    u.bind((addr, 0))
    held.append(u)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect(("127.0.0.1", 9))
held.append(c)
if os.fork() == 0:  # a child holding the shared listener too
    signal.pause()
    os._exit(0)
ports = [s.getsockname()[1] for s in (v4, v6, anyv4, shared)]
print(" ".join(map(str, ports)), flush=True)
for s in (v4, v6, anyv4):
    held.append(s.accept()[0])
print("accepted", flush=True)
signal.pause()
"""

CLIENT = r"""
import signal, socket, sys
v4, v6, anyv4 = (int(p) for p in sys.argv[1:4])
held = [socket.create_connection(("127.0.0.1", v4)), socket.create_connection(("::1", v6)),
        socket.create_connection(("127.0.0.1", anyv4))]
gone = socket.create_connection(("127.0.0.1", anyv4))  # never accepted, closed: no owner
print("connected", flush=True)
sys.stdin.readline()
gone.close()
print("closed", flush=True)
signal.pause()
"""


def _line(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line:
        raise SystemExit(f"probe {p.args!r} ended")
    return line.strip()


def start_probes(tmp: str) -> list[subprocess.Popen[str]]:
    py = sys.executable
    server = subprocess.Popen([py, "-c", SERVER, tmp], stdout=subprocess.PIPE, text=True)
    ports = _line(server).split()
    client = subprocess.Popen([py, "-c", CLIENT, *ports[:3]], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert _line(client) == "connected" and _line(server) == "accepted"
    assert client.stdin is not None
    client.stdin.write("close\n")
    client.stdin.flush()
    assert _line(client) == "closed"
    other = subprocess.Popen(["sleep", "600"], user=65534, group=65534, extra_groups=[],
                             cwd="/", text=True)
    # Wait until the closed socket is in FIN_WAIT2 (the close above is asynchronous).
    deadline = time.monotonic() + 10
    while "FIN_WAIT2" not in _tcp_states() and time.monotonic() < deadline:
        time.sleep(0.01)
    return [server, client, other]


def _tcp_states() -> set[str]:
    import psutil

    return {c.status for c in psutil.net_connections("tcp")}


def jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def read_all() -> dict[str, dict[str, list[dict[str, Any]]]]:
    from netsql.engine import Engine

    engine = Engine()
    out: dict[str, dict[str, list[dict[str, Any]]]] = {"native": {}, "psutil": {},
                                                        "native_again": {}}
    for table in TABLES:
        for run, backend in (("native", "native"), ("psutil", "psutil"),
                             ("native_again", "native")):
            os.environ["NETSQL_BACKEND"] = backend
            (result,) = list(engine.run(f"SELECT * FROM {table}"))
            assert result.data is not None
            cols = result.data.columns
            out[run][table] = [{c: jsonable(v) for c, v in zip(cols, row, strict=True)}
                               for row in result.data.rows]
    return out


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        probes = start_probes(tmp)
        try:
            found = read_all()
        finally:
            for p in probes:
                p.kill()
                p.wait()
    json.dump({"driver": os.getpid(), "probes": [p.pid for p in probes],
               "net_namespace": os.stat("/proc/self/ns/net").st_ino,
               "hostname": socket.gethostname(), "tables": found}, sys.stdout)


if __name__ == "__main__":
    main()
