"""Talking to a resident netsql (``netsql serve``, docs/serve.md): the client side
(the server is server.py).

A one-liner pays for starting Python and DuckDB (0.15-0.2 s) before it reads a single
socket, which is more than ``ss`` or ``ps`` take in all. ``netsql serve`` keeps an
engine (and a DNS capture, so one-liners see the DNS of the last hours) running
behind a Unix socket; ``netsql -e`` hands it the command when one is listening and
runs it locally otherwise. Light on purpose: imported by every one-liner, before
DuckDB, so only the standard library's compiled _socket and _json (their Python
modules, socket and json, import selectors, re and more: measured 4-6 ms of a one-liner
that takes 25; see _dumps and _loads).

Trust, both ways: the client talks only to a socket file owned by its own user, in a
directory only that user may write, whose server process runs as that user too
(SO_PEERCRED); the server answers only peers of its own user.
"""

from __future__ import annotations

import os
import stat

from netsql.sockpath import socket_path

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing: 3 ms a one-liner)
if TYPE_CHECKING:
    import _socket
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any, BinaryIO

    from netsql.context import Env

#: Sent with each request; a server of another version declines and the client runs
#: the command itself.
PROTOCOL = 2
MAX_REQUEST = 64 << 20
#: Set in a frame's length word: the frame is the command's standard output as bytes,
#: to be written as they are (a client that asked for them: request "raw"), not JSON.
#: Measured with 40,000 sockets' rows as csv (2 MB): JSON-encoding them in the server
#: and decoding them in the client cost 15-20 ms of a 180 ms one-liner.
RAW = 1 << 31
#: The error handlers a client may ask its raw output to be encoded with (its stdout's).
RAW_ERRORS = frozenset({"strict", "surrogateescape", "replace", "backslashreplace"})
#: Sockets whose server declined this process's command (netsql.serve.quick): the
#: command runs here without asking again.
TRIED: list[str] = []


def untrusted(path: str) -> str | None:
    """Why the socket at ``path`` must not be used (None: it may). Someone else's socket
    could answer a root one-liner with made-up rows."""
    me = os.geteuid()
    try:
        st = os.lstat(path)
        parent = os.stat(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} is not a socket"
    if st.st_uid != me:
        return f"{path} belongs to uid {st.st_uid}, not to this user ({me})"
    if parent.st_uid != me or parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{os.path.dirname(path)} may be written by other users"
    return None


def peer_uid(sock: _socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    import _socket
    import struct

    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def connect(path: str | None = None, timeout: float = 2.0) -> _socket.socket | None:
    """A connection to a trusted resident netsql, or None when there is none (checked
    with os alone first: a one-liner with no server pays for no more imports)."""
    path = path or socket_path()
    if not path or untrusted(path) is not None:
        return None
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        if peer_uid(sock) != os.geteuid():
            sock.close()
            return None
        sock.settimeout(None)
    except OSError:
        sock.close()
        return None
    return sock


def send(sock: _socket.socket, obj: Any) -> None:
    """One frame: 4-byte big-endian length, then JSON."""
    import _socket
    import struct

    data = _dumps(obj).encode()
    # MSG_NOSIGNAL: a peer that went away is an error here, not a SIGPIPE that ends us.
    sock.sendall(struct.pack(">I", len(data)) + data, _socket.MSG_NOSIGNAL)


def send_raw(sock: _socket.socket, data: bytes) -> None:
    """One frame of standard output, as bytes (see RAW)."""
    import _socket
    import struct

    head = struct.pack(">I", RAW | len(data))
    if len(data) < 1 << 16:
        sock.sendall(head + data, _socket.MSG_NOSIGNAL)
    else:  # (not copied again to put 4 bytes in front)
        sock.sendall(head, _socket.MSG_NOSIGNAL)
        sock.sendall(data, _socket.MSG_NOSIGNAL)


def receive(stream: BinaryIO | Reader) -> Any:
    """The next frame (a RAW frame as bytes), or None at the end of the stream."""
    import struct

    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    raw, n = n & RAW, n & ~RAW
    if n > MAX_REQUEST:
        raise ValueError(f"frame of {n} bytes")
    data = stream.read(n)
    if len(data) < n:
        return None
    if raw:
        return data
    try:
        return _loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: [[[[... nested deep
        raise ValueError(f"not a frame: {type(exc).__name__}") from None


class Reader:
    """A socket's bytes read as a file's read(n) reads them (n bytes, fewer only at the
    end of the stream), for receive: socket.makefile needs the socket module."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    def read(self, n: int) -> bytes:
        import _socket

        parts: list[bytes] = []
        got = 0
        while got < n:  # MSG_WAITALL: all n unless the stream ends or a signal came
            data = self.sock.recv(n - got, _socket.MSG_WAITALL)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def forward(sock: _socket.socket, request: dict[str, Any], stdout: Any, stderr: Any
            ) -> int | None:
    """Send ``request`` and copy the answer to ``stdout``/``stderr`` as it comes; the
    exit status, or None when the server declined (the caller runs it itself)."""
    try:
        try:
            send(sock, dict(request, protocol=PROTOCOL))
        except OSError:  # it went away before reading: run the command here
            return None
        stream = Reader(sock)
        binary = getattr(stdout, "buffer", None)
        while True:
            frame = receive(stream)
            if frame is None:
                _say(stderr, "the resident netsql went away", "error")
                return 1
            if isinstance(frame, bytes):  # standard output as it is (RAW)
                if binary is not None:
                    stdout.flush()  # (after any text written before)
                    binary.write(frame)
                else:
                    stdout.write(frame.decode("utf-8", "surrogateescape"))
                continue
            if not isinstance(frame, dict):
                raise ValueError("a malformed answer from the resident netsql")
            if "declined" in frame:
                if frame.get("say"):  # busy: say why the command runs here
                    _say(stderr, f"running here: {frame['declined']}", "note")
                return None
            if "out" in frame:
                stdout.write(_text(frame["out"]))
            elif "err" in frame:
                stderr.write(_text(frame["err"]))
            elif "exit" in frame:
                stdout.flush()
                status = frame["exit"]
                if type(status) is not int:
                    raise ValueError("a malformed exit status from the resident netsql")
                return status
    finally:
        sock.close()


# -- JSON without the json module (its import takes re; see the module's docstring) --

def _dumps(obj: Any) -> str:
    """``obj`` (str, int, float, bool, None, lists, tuples, dicts with str keys) as the
    JSON text json.dumps writes, its strings escaped by the same compiled function
    (_json.encode_basestring_ascii); tests/test_serve_frames.py compares the two."""
    if isinstance(obj, str):
        return _quote()(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return float.__repr__(obj)
    if isinstance(obj, dict):
        for key in obj:
            if not isinstance(key, str):
                raise TypeError(f"a key of type {type(key).__name__}")
        return "{" + ", ".join(f"{_quote()(k)}: {_dumps(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(map(_dumps, obj)) + "]"
    raise TypeError(f"{type(obj).__name__} is not sent")


def _quote() -> Callable[[str], str]:
    try:
        from _json import encode_basestring_ascii
    except ImportError:  # (a Python built without it)
        from json.encoder import encode_basestring_ascii
    return encode_basestring_ascii


class _Decoding:
    """What _json.make_scanner reads of a json.JSONDecoder: json.loads' defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__
    memo: dict[str, str] = {}


def _loads(data: bytes) -> Any:
    """The value of the JSON text ``data`` (UTF-8), as json.loads reads it, by the same
    compiled scanner (_json.make_scanner); ValueError when it is not one whole value."""
    text = data.decode("utf-8")
    try:
        from _json import make_scanner

        context: Any = _Decoding  # (typeshed: "a make_scanner"; it reads attributes)
        scan = make_scanner(context)
    except (ImportError, AttributeError, TypeError):
        # (a Python without it, or one whose private scanner reads other attributes)
        import json

        return json.loads(text)
    space = " \t\n\r"  # (what json.loads skips around the value)
    try:
        value, end = scan(text, len(text) - len(text.lstrip(space)))
    except StopIteration:
        raise ValueError("no JSON value") from None
    if text[end:].strip(space):
        raise ValueError("more than one JSON value")
    return value


def raw_errors(stdout: Any) -> str | None:
    """What a request asks for as "raw": the error handler the server encodes this
    client's output with, when it may send it as bytes (RAW frames): a UTF-8 stdout
    with a handler of RAW_ERRORS; else None (JSON text frames, written as text here)."""
    encoding = str(getattr(stdout, "encoding", None) or "utf-8")
    errors = str(getattr(stdout, "errors", None) or "strict")
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    return errors if utf8 and errors in RAW_ERRORS else None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a malformed answer from the resident netsql")
    return value


def _say(stream: Any, text: str, kind: str) -> None:
    from netsql.context import notice  # (imported only to say something: argparse)

    notice(stream, text, kind)


# -- the client's side of netsql -e ---------------------------------------------

#: Variables a resident netsql takes from the client for one command.
FORWARDED_ENV = ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME",
                 "XDG_STATE_HOME", "NETSQL_INTEL_DB", "NETSQL_BACKEND", "NO_COLOR",
                 "SUDO_USER", "SUDO_UID", "SUDO_GID")


def forwardable(args: argparse.Namespace, env: Env) -> bool:
    """Whether a resident netsql may run this command: statements to run once, with its
    own capture (its interfaces, ports and buffer), not the shell or a watch."""
    from netsql.context import DNS_BUFFER

    if (args.local or args.watch is not None or args.interface or args.dns_port
            or args.dns_buffer != DNS_BUFFER or (args.capture and args.pcap) or args.hold
            or not (args.sources or not env.stdin_isatty)):
        return False
    # Files the server opens must be the ones the client means: regular files, not
    # /dev/stdin, a pipe or /proc/self (which would be the server's own).
    named = [str(s) for s in args.sources or [] if s.tag == "file"] + list(args.pcap or [])
    named += [str(s) for s in args.sources or [] if s.tag == "query" and "/" in str(s)]
    return all(_plain_file(p) for p in named)


def _plain_file(path: str) -> bool:
    real = os.path.realpath(path)
    if real.startswith(("/dev/", "/proc/")):
        return False
    try:
        return stat.S_ISREG(os.stat(real).st_mode)
    except OSError:
        return True  # missing: the server says so, as a local run would


def run_there(argv: Sequence[str], args: argparse.Namespace, env: Env) -> int | None:
    """Run the command in a resident netsql if one listens (None: none does, or it
    declined: run it here)."""
    from netsql import __version__

    path = socket_path()
    if not path or path in TRIED or untrusted(path) is not None:
        return None
    try:
        cwd = os.getcwd()
    except OSError:  # a directory since removed: run here, where it fails as it would
        return None
    # Wait and read before connecting: the server answers at once, or declines.
    if args.capture:  # the resident capture runs all along: wait, as a capture would
        from netsql.launch import countdown

        countdown(env, args.capture)
    piped = None if args.sources else env.stdin.read()
    request = {
        "argv": list(argv), "cwd": cwd, "stdin": piped,
        "stdout_isatty": bool(env.stdout_isatty), "width": env.width,
        "env": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ},
        "version": __version__, "raw": raw_errors(env.stdout),
    }
    status = None
    sock = connect(path)
    if sock is not None:
        try:
            status = forward(sock, request, env.stdout, env.stderr)
        except (OSError, ValueError) as exc:
            env.error(f"the resident netsql failed: {exc}")
            return 1
    if status is None and piped is not None:
        import io

        env.stdin = io.StringIO(piped)  # read already: hand it on
    return None if status is None else passed_on(status)


def passed_on(status: int) -> int:
    """The server's status as given (docs/serve.md); one no process can exit with is an
    error, never a success (an exit takes it modulo 256: 256 would read as 0)."""
    return status if 0 <= status <= 255 else 1
