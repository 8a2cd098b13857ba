"""Reading list files (plain, gzip, one-file zip) and telling their format apart."""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile

from netsql.intel.parsers import (
    FORMATS,
    PARSERS,
    Batch,
    Lines,
    ParseError,
    address_span,
    domain,
    is_address,
)

__all__ = ["FORMATS", "Batch", "ParseError", "detect", "parse", "read_lines"]


# -- detection ----------------------------------------------------------------------
def _line_kind(raw: str) -> str:
    if raw.lstrip().startswith("{"):
        try:
            obj = json.loads(raw)
        except ValueError:
            return "unknown"
        drop = isinstance(obj, dict) and ("cidr" in obj or obj.get("type") == "metadata")
        return "spamhaus-drop" if drop else "json"
    fields = re.split("[#;]", raw, maxsplit=1)[0].split()
    if len(fields) >= 2 and is_address(fields[0]):
        return "hosts"
    if len(fields) == 1:
        try:
            address_span(fields[0])
            return "ips"
        except ValueError:
            return "domains" if domain(fields[0]) else "unknown"
    return "unknown"


def detect(path: str, lines: Lines) -> str:
    """The format of ``lines``, from abuse.ch headers or the first 100 data lines."""
    comments = " ".join(raw for _, raw in lines[:50] if raw.startswith("#")).lower()
    if "urlhaus" in comments or "dateadded,url" in comments.replace(" ", ""):
        return "urlhaus-csv"
    if "threatfox" in comments or "ioc_value" in comments:
        return "threatfox-csv"
    data = [(no, raw) for no, raw in lines if raw.strip() and not raw.lstrip()
            .startswith(("#", ";"))][:100]
    if not data:
        raise ParseError(path, None, "no indicators to tell the format by; pass --format")
    kinds = [(no, _line_kind(raw)) for no, raw in data]
    found = {k for _, k in kinds}
    if len(found) == 1 and "unknown" not in found and "json" not in found:
        return found.pop()
    first: dict[str, int] = {}
    for no, k in kinds:
        first.setdefault(k, no)
    said = ", ".join(f"line {no} " + ("is not a known kind of line" if k == "unknown"
                                      else f"looks like {k}")
                     for k, no in sorted(first.items(), key=lambda kv: kv[1])[:3])
    raise ParseError(path, None, f"cannot tell the format ({said}); pass --format, one of "
                     + ", ".join(FORMATS))


# -- files --------------------------------------------------------------------------
def read_lines(path: str, data: bytes | None = None) -> tuple[Lines, str]:
    """The lines of ``path`` (or of ``data``, read from ``path``), unpacking gzip and
    single-file zip (abuse.ch ships zips), and the SHA-256 of the bytes. OSError when
    unreadable; ParseError when not UTF-8 text."""
    import hashlib

    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ParseError(path, None, f"broken gzip file: {exc}") from None
    elif data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = [n for n in z.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise ParseError(path, None, f"a zip archive of {len(names)} files; "
                                     "extract the list to import")
                data = z.read(names[0])
        except zipfile.BadZipFile as exc:
            raise ParseError(path, None, f"broken zip file: {exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(path, data.count(b"\n", 0, exc.start) + 1, "not UTF-8 text") from None
    if "\x00" in text:
        raise ParseError(path, text.count("\n", 0, text.index("\x00")) + 1,
                         "binary data, not a text list")
    return [(i, line[:-1] if line.endswith("\r") else line)
            for i, line in enumerate(text.split("\n"), 1)], digest


def parse(path: str, fmt: str = "auto", lines: Lines | None = None) -> Batch:
    """Every indicator of the file, or ParseError naming the first bad line."""
    if lines is None:
        lines, _ = read_lines(path)
    if fmt == "auto":
        fmt = detect(path, lines)
    if fmt not in PARSERS:
        raise ParseError(path, None, f"unknown format {fmt!r}")
    batch = Batch(fmt, lines=sum(1 for _, raw in lines if raw.strip()))

    def fail(line: int | None, message: str) -> ParseError:
        return ParseError(path, line, message)

    PARSERS[fmt](lines, batch, fail)
    return batch
