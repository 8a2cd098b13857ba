"""Damaged inputs for the fuzz tests: byte edits drawn by hypothesis, applied to a
known-good file, capture or dump."""

from __future__ import annotations

from hypothesis import strategies as st

Edit = tuple[int, int, str]


def edits(max_size: int) -> st.SearchStrategy[list[Edit]]:
    """Lists of (position, byte value, kind): 's' sets a byte, 'd' deletes 1-8 bytes,
    'i' inserts 1-4 copies of the value (positions wrap around the input)."""
    return st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255),
                              st.sampled_from("sdi")), max_size=max_size)


def apply_edits(data: bytes | bytearray, changes: list[Edit]) -> bytearray:
    buf = bytearray(data)
    for pos, val, kind in changes:
        pos %= len(buf) + 1
        if kind == "s" and pos < len(buf):
            buf[pos] = val
        elif kind == "d":
            del buf[pos:pos + 1 + val % 8]
        else:
            buf[pos:pos] = bytes([val]) * (1 + val % 4)
    return buf
