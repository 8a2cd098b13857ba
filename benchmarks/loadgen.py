"""Make a busy host for benchmarks: many loopback TCP sockets, many processes.

    python benchmarks/loadgen.py sockets 40000 &   # holds ~40,000 sockets in 8 processes
    python benchmarks/loadgen.py processes 2000 &  # holds 2,000 sleeping child processes

Prints "ready" on stdout once everything is set up, then waits until killed
(SIGTERM or SIGINT), and then cleans up its children.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
import time


def _hold_connections(pairs: int) -> None:
    """Child: listen, connect ``pairs`` clients to itself, accept them, keep all."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    port = srv.getsockname()[1]
    held = []
    for _ in range(pairs):
        c = socket.socket()
        c.connect(("127.0.0.1", port))
        held.append(c)
        held.append(srv.accept()[0])
    sys.stdout.write("up\n")
    sys.stdout.flush()
    signal.pause()


def sockets(total: int, workers: int = 8) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workers = max(workers, -(-total // (hard - 100)))
    pairs = total // 2 // workers
    children = []
    readers = []
    for _ in range(workers):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.dup2(w, 1)
            _hold_connections(pairs)
            os._exit(0)
        os.close(w)
        children.append(pid)
        readers.append(r)
    for r in readers:
        os.read(r, 3)
        os.close(r)
    _ready(children)


def processes(count: int) -> None:
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        children.append(pid)
    _ready(children)


def _ready(children: list[int]) -> None:
    def stop(*_: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            os.waitpid(pid, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    kind, n = sys.argv[1], int(sys.argv[2])
    {"sockets": sockets, "processes": processes}[kind](n)
