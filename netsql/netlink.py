"""Netlink framing, shared by the sock_diag dump (sockdiag.py) and the NFQUEUE hold
(capture/hold.py): message headers, attributes (TLVs), 4-byte alignment."""

from __future__ import annotations

import struct
from collections.abc import Iterator

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3

#: struct nlmsghdr: length, type, flags, sequence, port id.
HDR = struct.Struct("=IHHII")
#: struct nlattr: length, type.
ATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")


def align(n: int) -> int:
    return (n + 3) & ~3


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One netlink message: the header, then ``body``."""
    return HDR.pack(HDR.size + len(body), kind, flags, seq, 0) + body


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    raw = ATTR.pack(4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def messages(data: bytes | bytearray, n: int | None = None
             ) -> Iterator[tuple[int, int, int, int]]:
    """(type, sequence, body start, body end) of each message in ``data[:n]``; stops at
    a header too short to be one."""
    n = len(data) if n is None else min(n, len(data))
    off = 0
    while off + HDR.size <= n:
        length, kind, _, seq, _ = HDR.unpack_from(data, off)
        if length < HDR.size:
            return
        yield kind, seq, off + HDR.size, min(off + length, n)
        off += align(length)


def attributes(data: bytes | bytearray, start: int, end: int
               ) -> Iterator[tuple[int, int, int]]:
    """(type, value start, value end) of each attribute in ``data[start:end]``."""
    while start + ATTR.size <= end:
        length, kind = ATTR.unpack_from(data, start)
        if length < ATTR.size:
            return
        yield kind, start + ATTR.size, min(start + length, end)
        start += align(length)


def error_code(data: bytes | bytearray, body: int, end: int) -> int:
    """An NLMSG_ERROR message's error: 0 (an acknowledgement) or a positive errno."""
    return -_ERRNO.unpack_from(data, body)[0] if body + 4 <= end else 0
