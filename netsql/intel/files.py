"""Reading list files (plain, gzip, one-file zip) and telling their format apart.

Files are read as a stream, line by line, in bounded memory whatever their size: a line
longer than :data:`MAX_LINE` bytes stops the import with a one-line error (no list has
such lines; a file of NUL bytes or one enormous line is not a list)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import IO, Any

from netsql.intel.parsers import (
    FORMATS,
    PARSERS,
    Batch,
    Lines,
    ParseError,
    Spill,
    address_span,
    domain,
    is_address,
)

__all__ = ["FORMATS", "MAX_LINE", "Batch", "ListFile", "ParseError", "detect", "parse",
           "read_lines"]

#: The longest line accepted, in bytes (URLhaus URLs run to a few KB).
MAX_LINE = 64 * 1024
#: What format detection may hold while it looks for data lines.
PEEK_LINES, PEEK_BYTES = 10_000, 4 * 1024 * 1024
_CHUNK = 1 << 16


# -- detection ----------------------------------------------------------------------
def _line_kind(raw: str) -> str:
    if raw.lstrip().startswith("{"):
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
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


def _is_data(raw: str) -> bool:
    return bool(raw.strip()) and not raw.lstrip().startswith(("#", ";"))


def detect(path: str, lines: list[tuple[int, str]]) -> str:
    """The format of ``lines``, from abuse.ch headers or the first 100 data lines."""
    comments = " ".join(raw for _, raw in lines[:50] if raw.startswith("#")).lower()
    if "urlhaus" in comments or "dateadded,url" in comments.replace(" ", ""):
        return "urlhaus-csv"
    if "threatfox" in comments or "ioc_value" in comments:
        return "threatfox-csv"
    data = [(no, raw) for no, raw in lines if _is_data(raw)][:100]
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


def _peek(lines: Iterator[tuple[int, str]]) -> list[tuple[int, str]]:
    """The first lines, enough to tell the format by: 50 lines and 100 data lines, or
    what fits in PEEK_LINES and PEEK_BYTES."""
    head: list[tuple[int, str]] = []
    data = size = 0
    for item in lines:
        head.append(item)
        data += _is_data(item[1])
        size += len(item[1])
        if (data >= 100 and len(head) >= 50) or len(head) >= PEEK_LINES or size >= PEEK_BYTES:
            break
    return head


# -- files --------------------------------------------------------------------------
class _Hashing(io.RawIOBase):
    """A readable stream that hashes what is read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.sha = raw, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        return n


class ListFile:
    """A list file opened for reading as (line number, text) pairs, without line ends.

    ``path`` is opened unless ``stream`` (a binary stream, standard input) is given.
    gzip and single-file zip (abuse.ch ships zips) are unpacked as they are read;
    ``sha256`` is the hash of the file's bytes once the lines have been read. OSError
    when unreadable; ParseError when not UTF-8 text, binary, or a line is longer than
    ``max_line`` bytes."""

    def __init__(self, path: str, stream: IO[bytes] | None = None,
                 max_line: int = MAX_LINE) -> None:
        self.path, self.max_line = path, max_line
        self._own: list[IO[Any]] = []
        self._zip: zipfile.ZipFile | None = None
        if stream is None:
            stream = open(path, "rb")  # closed by close()
            self._own.append(stream)
        self._hash = _Hashing(stream)
        buffered: io.BufferedReader[Any] = io.BufferedReader(self._hash, _CHUNK)
        self._own.append(buffered)
        magic = buffered.peek(4)[:4]
        self._text: IO[bytes]
        if magic[:2] == b"\x1f\x8b":
            import gzip

            self._text = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
            self._kind = "gzip"
        elif magic == b"PK\x03\x04":
            self._text = self._open_zip(buffered)
            self._kind = "zip"
        else:
            self._text, self._kind = buffered, "plain"

    def _open_zip(self, buffered: IO[bytes]) -> IO[bytes]:
        # A zip's directory is at its end: copy the file (hashing it) to a temporary
        # file first, which also serves a zip read from standard input.
        spool = tempfile.TemporaryFile()
        self._own.append(spool)
        shutil.copyfileobj(buffered, spool, _CHUNK)
        spool.seek(0)
        try:
            self._zip = zipfile.ZipFile(spool)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ParseError(self.path, None, f"a zip archive of {len(names)} files; "
                                 "extract the list to import")
            return self._zip.open(names[0])
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as exc:
            raise ParseError(self.path, None, f"broken zip file: {exc}") from None

    @property
    def sha256(self) -> str:
        return self._hash.sha.hexdigest()

    def _readline(self, no: int) -> bytes:
        import zlib

        try:
            return self._text.readline(self.max_line + 2)
        except (EOFError, zlib.error, zipfile.BadZipFile) as exc:
            raise ParseError(self.path, no, f"broken {self._kind} file: {exc}") from None
        except OSError as exc:
            if self._kind == "plain" or exc.errno is not None:
                raise
            raise ParseError(self.path, no, f"broken {self._kind} file: {exc}") from None

    def __iter__(self) -> Iterator[tuple[int, str]]:
        for no in itertools.count(1):
            line = self._readline(no)
            if not line:
                break
            body = line[:-1] if line.endswith(b"\n") else line
            if body.endswith(b"\r"):
                body = body[:-1]
            if len(body) > self.max_line:
                raise ParseError(self.path, no, "binary data, not a text list"
                                 if b"\x00" in body else f"a line longer than "
                                 f"{self.max_line:,} bytes: not a list of indicators")
            try:
                text = body.decode("utf-8-sig" if no == 1 else "utf-8")
            except UnicodeDecodeError:
                raise ParseError(self.path, no, "not UTF-8 text") from None
            if "\x00" in text:
                raise ParseError(self.path, no, "binary data, not a text list")
            yield no, text
        # Hash what is left (a zip's tail was read already; gzip trailers may remain).
        while self._hash.read(_CHUNK):
            pass

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        for f in reversed(self._own):
            try:
                f.close()
            except OSError:
                pass

    def __enter__(self) -> ListFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_lines(path: str, data: bytes | None = None) -> tuple[Lines, str]:
    """Every line of ``path`` (or of ``data``) at once, and the SHA-256 of the bytes: for
    small files and tests; imports stream through :class:`ListFile`."""
    with ListFile(path, None if data is None else io.BytesIO(data)) as f:
        lines = list(f)
        return lines, f.sha256


def parse(path: str, fmt: str = "auto", lines: Iterable[tuple[int, str]] | None = None,
          spill: Spill | None = None) -> Batch:
    """Every indicator of the file, or ParseError naming the first bad line. With
    ``spill``, indicators are handed over in chunks (see :class:`Batch`) and the Batch
    returned holds the rest and the counts."""
    if lines is None:
        with ListFile(path) as f:
            return parse(path, fmt, f, spill)
    it = iter(lines)
    if fmt == "auto":
        head = _peek(it)
        fmt = detect(path, head)
        it = itertools.chain(head, it)
    if fmt not in PARSERS:
        raise ParseError(path, None, f"unknown format {fmt!r}")
    batch = Batch(fmt, spill=spill)

    def fail(line: int | None, message: str) -> ParseError:
        return ParseError(path, line, message)

    def counted() -> Iterator[tuple[int, str]]:
        for item in it:
            if item[1].strip():
                batch.lines += 1
            yield item

    PARSERS[fmt](counted(), batch, fail)
    batch.flush()
    return batch
