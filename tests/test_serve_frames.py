"""The resident netsql's frames without the json module (netsql/serve/client.py): its
JSON writer and reader against json.dumps and json.loads, on generated values and on
damaged text; and frames read off a real socket pair, as the one-liner reads them."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsql.serve import client

#: What frames hold: text (any code point, lone surrogates too: surrogate-escaped
#: bytes), integers of any size, finite floats, booleans, null, lists, objects.
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False)
    | st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF)),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=2000, deadline=None)
@given(VALUES)
def test_written_as_json_writes_it(value: Any) -> None:
    text = client._dumps(value)
    assert text == json.dumps(value)
    assert client._loads(text.encode("utf-8", "surrogatepass")) == json.loads(text)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(VALUES.map(json.dumps), st.text(max_size=40)), st.integers(0, 60),
       st.text(max_size=3))
def test_damaged_text_read_as_json_reads_it(text: str, cut: int, junk: str) -> None:
    """Cut short, with something after it, or not JSON at all: the same value, or a
    ValueError (RecursionError for deep nesting) when json.loads fails too."""
    for candidate in (text, text[:cut], text + junk, junk + text, f" {text}\n"):
        data = candidate.encode("utf-8", "surrogatepass")
        try:
            expected = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):
            with pytest.raises((ValueError, RecursionError)):
                client._loads(data)
            continue
        assert json.dumps(client._loads(data)) == json.dumps(expected)  # (NaN too)


def test_what_json_cannot_write_is_refused() -> None:
    for bad in (float("nan"), float("inf"), {1: "a"}, {"a": object()}, b"bytes"):
        with pytest.raises((ValueError, TypeError)):
            client._dumps(bad)


def test_frames_read_off_a_socket_whole_in_order() -> None:
    """JSON and RAW frames (one of 3 MB, more than a socket buffer holds) as the client
    reads them; a frame cut off by the peer's hang-up ends the stream (None)."""
    big = bytes(range(256)) * (3 * 4096)
    a, b = socket.socketpair()
    try:
        def peer() -> None:
            client.send(a, {"out": "é\udcff", "n": [1, 2.5, None, True]})
            client.send_raw(a, big)
            client.send_raw(a, b"")
            client.send(a, {"exit": 3})
            a.sendall(b"\x00\x00\x00\x10{\"exit\"")  # 16 bytes announced, 7 sent
            a.close()

        t = threading.Thread(target=peer)
        t.start()
        stream = client.Reader(b)
        assert client.receive(stream) == {"out": "é\udcff", "n": [1, 2.5, None, True]}
        assert client.receive(stream) == big
        assert client.receive(stream) == b""
        assert client.receive(stream) == {"exit": 3}
        assert client.receive(stream) is None
        assert client.receive(stream) is None
        t.join()
    finally:
        a.close()
        b.close()
