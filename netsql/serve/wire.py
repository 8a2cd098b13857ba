"""The server side of netsql serve's socket protocol (the client side is client.py):
reading a client's request whole within a deadline, checking its fields, and sending
a command's output back as frames in the order it was written.
"""

from __future__ import annotations

import io
import socket
import time
from typing import Any

from netsql import __version__
from netsql.serve import client


class Outbox:
    """Output for the client, in the order it was written, sent as frames: standard
    output as bytes (client.RAW frames) when the client asked for that (``raw``: the
    error handler to encode text with), else as JSON text like standard error."""

    def __init__(self, conn: socket.socket, raw: str | None = None) -> None:
        self.conn = conn
        self.raw = raw
        #: (kind, pieces) in order; the pieces of a frame are joined when it is sent
        #: (adding each write to the frame's text instead copied the frame again for
        #: every row a csv writer wrote: 40,000 rows, 0.1 s). Raw output's pieces are
        #: bytes, kind "raw".
        self.parts: list[tuple[str, list[Any]]] = []
        self.size = 0

    def put(self, kind: str, text: str) -> None:
        if kind == "out" and self.raw is not None:
            self.put_bytes(text.encode("utf-8", self.raw))
        else:
            self._add(kind, text)

    def put_bytes(self, data: bytes) -> None:
        """Standard output already encoded as UTF-8 (what DuckDB rendered)."""
        if self.raw is None:
            self._add("out", data.decode("utf-8", "surrogateescape"))
        else:
            self._add("raw", data)

    def _add(self, kind: str, piece: Any) -> None:
        if self.parts and self.parts[-1][0] == kind:
            self.parts[-1][1].append(piece)
        else:
            self.parts.append((kind, [piece]))
        self.size += len(piece)
        if self.size >= 1 << 16:
            self.flush()

    def flush(self) -> None:
        parts, self.parts, self.size = self.parts, [], 0
        for kind, pieces in parts:
            if kind == "raw":
                client.send_raw(self.conn, b"".join(pieces))
            else:
                client.send(self.conn, {kind: "".join(pieces)})


class Frames(io.TextIOBase):
    """A text stream (the command's stdout or stderr) feeding the outbox. Standard
    output has a ``buffer`` too, as sys.stdout has, for bytes written as they are
    (formats.data.write_text: what DuckDB rendered)."""

    def __init__(self, box: Outbox, kind: str, isatty: bool) -> None:
        self.box, self.kind, self._isatty = box, kind, isatty
        if kind == "out":
            self.buffer = RawOut(box)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._isatty

    def write(self, text: str) -> int:
        self.box.put(self.kind, text)
        return len(text)


class RawOut(io.RawIOBase):
    """The binary side of the standard output Frames."""

    def __init__(self, box: Outbox) -> None:
        self.box = box

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        self.box.put_bytes(data)
        return len(data)


def read_request(conn: socket.socket, deadline: float) -> Any:
    """The client's one request frame, whole within ``deadline`` (a client trickling
    bytes must not hold the server)."""
    import struct

    def exactly(n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ValueError("the request took too long")
            conn.settimeout(left)
            chunk = conn.recv(min(n - got, 1 << 20))
            if not chunk:
                raise ValueError("the client hung up")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    (n,) = struct.unpack(">I", exactly(4))
    if n > client.MAX_REQUEST:
        raise ValueError(f"a request of {n} bytes")
    body = exactly(n)
    conn.settimeout(None)
    return client.receive(io.BytesIO(struct.pack(">I", n) + body))


def well_formed(request: Any) -> bool:
    """A request of this version whose fields have the types a client sends."""
    if not isinstance(request, dict) or request.get("protocol") != client.PROTOCOL \
            or request.get("version") != __version__:
        return False
    argv, env, stdin = request.get("argv"), request.get("env", {}), request.get("stdin")
    return (isinstance(argv, list) and all(isinstance(a, str) for a in argv)
            and isinstance(request.get("cwd"), str)
            and (stdin is None or isinstance(stdin, str))
            and isinstance(request.get("width", 0), int)
            and isinstance(request.get("stdout_isatty", False), bool)
            and request.get("raw") in (None, *client.RAW_ERRORS)
            and isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()))
