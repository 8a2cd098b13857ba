"""Untrusted text (DNS names, command lines) never reaches a terminal raw: the one rule
that makes control characters visible. A leaf: the standard library only."""

from __future__ import annotations

import re

# Characters that must never reach a terminal raw: C0 (incl. \t \n \r), DEL, C1, the
# Unicode line/paragraph separators (U+2028/U+2029), bidi embeddings/overrides
# (U+202A-U+202E) and isolates (U+2066-U+2069), and surrogates (lone ones come from
# bytes decoded with errors="surrogateescape").
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # a byte smuggled in by surrogateescape: show the byte
        return f"\\x{o - 0xDC00:02x}"
    if o <= 0xFF:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}"


def escape_control(text: str) -> str:
    r"""Make control characters visible: ESC -> ``\x1b``, newline -> ``\n``, tab -> ``\t``,
    C1 -> ``\x9b``, U+202E -> ``\u202e``, surrogate-escaped byte 0xff -> ``\xff``.
    Text without any of them is returned unchanged (same object). Backslashes are not
    doubled, so a literal ``\x1b`` in the data looks the same as an escaped ESC."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_char, text)


def storable(text: str) -> str:
    r"""``text`` as DuckDB can hold it (UTF-8): a byte smuggled in by surrogateescape
    (a path or command line that is not UTF-8) becomes the four characters ``\xff``,
    as ``escape_control`` shows it; any other lone surrogate ``\udc00``-style."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate surrogateescape did not make
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
