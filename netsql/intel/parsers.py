"""Feed parsers, one per format. Standard library only (csv, json, ipaddress); reading
files and telling formats apart is in files.py.

Parsers read lines as a stream and hand indicators over in chunks (:class:`Batch`);
the import writes them in one transaction, so a bad line stops the import with nothing
imported; :class:`ParseError` names the file and the line. Addresses are kept as
numbers in one 128-bit space, IPv4 mapped into ``::ffff:0:0/96``
(so an IPv4 list also matches a socket's ``::ffff:1.2.3.4``).
"""

from __future__ import annotations

import csv
import ipaddress
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

FORMATS = ("hosts", "domains", "ips", "urlhaus-csv", "threatfox-csv", "spamhaus-drop")
V4_BASE = 0xFFFF_0000_0000  # ::ffff:0.0.0.0

# Names a hosts file maps for the machine itself (StevenBlack's preamble), never indicators.
LOCAL_NAMES = frozenset({
    "localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost",
    "ip6-loopback", "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
    "ip6-allhosts", "localhost4", "localhost6", "localhost4.localdomain4",
    "localhost6.localdomain6"})

# URLhaus CSV columns, newest first (older dumps lack last_online).
URLHAUS_COLUMNS = (
    ("id", "dateadded", "url", "url_status", "last_online", "threat", "tags", "urlhaus_link",
     "reporter"),
    ("id", "dateadded", "url", "url_status", "threat", "tags", "urlhaus_link", "reporter"),
)
THREATFOX_COLUMNS = ("first_seen_utc", "ioc_id", "ioc_value", "ioc_type", "threat_type",
                     "fk_malware", "malware_alias", "malware_printable", "last_seen_utc",
                     "confidence_level", "reference", "tags", "anonymous", "reporter")

_LABELS = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
_DOTTED = re.compile(r"[0-9.]+")


class ParseError(Exception):
    """A file that cannot be imported; ``line`` is 1-based (None: the whole file)."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(message)
        self.path, self.line, self.message = path, line, message

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


Spill = Callable[["Batch"], None]
#: Indicators a Batch holds before it hands them to its ``spill``.
CHUNK = 20_000
#: Kinds of skipped entries counted apart; more are counted as "other entries".
SKIPPED_KINDS = 20


@dataclass
class Batch:
    """Parsed indicators, column by column (what db.import_batch loads).

    Without ``spill`` a Batch holds every indicator, duplicates dropped. With it, the
    columns are handed to ``spill`` every CHUNK indicators and emptied (``spilled``
    counts them), and duplicates are left for the database to drop: memory stays
    bounded whatever the file's size."""

    format: str
    indicator: list[str] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    host: list[str | None] = field(default_factory=list)  # name matched against DNS names
    lo: list[str | None] = field(default_factory=list)  # first address (decimal text)
    hi: list[str | None] = field(default_factory=list)  # last address
    threat: list[str | None] = field(default_factory=list)
    tags: list[list[str] | None] = field(default_factory=list)
    first_seen: list[str | None] = field(default_factory=list)  # ISO text, UTC
    line: list[int] = field(default_factory=list)
    lines: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    spill: Spill | None = field(default=None, repr=False)
    spilled: int = 0
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return len(self.indicator)

    def add(self, line: int, indicator: str, kind: str, host: str | None = None,
            span: tuple[int, int] | None = None, threat: str | None = None,
            tags: list[str] | None = None, first_seen: str | None = None) -> None:
        if self.spill is None:
            key = (kind, indicator)
            if key in self._seen:
                self.duplicates += 1
                return
            self._seen.add(key)
        self.indicator.append(indicator)
        self.kind.append(kind)
        self.host.append(host)
        self.lo.append(None if span is None else str(span[0]))
        self.hi.append(None if span is None else str(span[1]))
        self.threat.append(threat or None)
        self.tags.append(tags or None)
        self.first_seen.append(first_seen or None)
        self.line.append(line)
        if self.spill is not None and len(self.indicator) >= CHUNK:
            self.flush()

    def skip(self, what: str) -> None:
        """Count an entry that is not an indicator (a file names a bounded few kinds)."""
        if what not in self.skipped and len(self.skipped) >= SKIPPED_KINDS:
            what = "other entries"
        self.skipped[what] += 1

    def flush(self) -> None:
        """Hand the indicators held to ``spill`` (nothing without one)."""
        if self.spill is None or not self.indicator:
            return
        self.spill(self)
        self.spilled += len(self.indicator)
        for column in (self.indicator, self.kind, self.host, self.lo, self.hi, self.threat,
                       self.tags, self.first_seen, self.line):
            column.clear()


Lines = Iterable[tuple[int, str]]  # (1-based line number, text without the line break)
Fail = Callable[[int | None, str], ParseError]


# -- values -------------------------------------------------------------------------
def domain(text: str) -> str | None:
    """``text`` as a lower-case DNS name without the trailing dot; None when it is not one.
    A leading ``*.`` or ``.`` (subdomains of) is dropped: every domain indicator matches
    its subdomains anyway. International names become their xn-- form."""
    name = text.strip().lower().rstrip(".")
    if name.startswith("*."):
        name = name[2:]
    elif name.startswith("."):
        name = name[1:]
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if len(name) > 253 or not _LABELS.fullmatch(name) or _DOTTED.fullmatch(name):
        return None
    return name


def address_span(text: str) -> tuple[str, str, tuple[int, int]]:
    """(kind 'ip' or 'cidr', normal form, (first, last)) of an address or network;
    ValueError when it is neither. Host bits of a network are ignored (1.2.3.4/24 is
    1.2.3.0/24)."""
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        lo, hi, kind, norm = int(net.network_address), int(net.broadcast_address), "cidr", str(net)
        v4 = net.version == 4
    else:
        addr = ipaddress.ip_address(text)
        lo = hi = int(addr)
        kind, norm, v4 = "ip", str(addr), addr.version == 4
    if v4:
        lo, hi = lo + V4_BASE, hi + V4_BASE
    return kind, norm, (lo, hi)


def _shown(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _tags(text: str | None) -> list[str]:
    if not text or text.strip() in ("None", "none", "null"):
        return []
    return [t.strip() for t in text.split(",") if t.strip()]


def _when(fail: Fail, no: int, text: str | None) -> str | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace(" UTC", "")).isoformat(" ")
    except ValueError:
        raise fail(no, f"not a date and time: {_shown(text)}") from None


# -- formats ------------------------------------------------------------------------
def _hosts(lines: Lines, batch: Batch, fail: Fail) -> None:
    addresses: dict[str, bool] = {}
    for no, raw in lines:
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        ok = addresses.get(fields[0])
        if ok is None:
            ok = addresses[fields[0]] = is_address(fields[0])
        if not ok:
            raise fail(no, f"not a hosts line (ADDRESS NAME...): {_shown(raw)}")
        if len(fields) < 2:
            raise fail(no, f"a hosts line needs a name after the address: {_shown(raw)}")
        for word in fields[1:]:
            low = word.lower()
            if low in LOCAL_NAMES:
                batch.skip("localhost entries")
            elif (":" in low or _DOTTED.fullmatch(low)) and is_address(low):
                batch.skip("addresses as names")
            else:
                name = domain(low)
                if name is None:
                    raise fail(no, f"not a domain name: {_shown(word)}")
                batch.add(no, name, "domain", name)


def _domains(lines: Lines, batch: Batch, fail: Fail) -> None:
    for no, raw in lines:
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 1:
            hint = " (a hosts file? use --format hosts)" if is_address(fields[0]) else ""
            raise fail(no, f"expected one domain name per line: {_shown(raw)}{hint}")
        name = domain(fields[0])
        if name is None:
            raise fail(no, f"not a domain name: {_shown(fields[0])}")
        batch.add(no, name, "domain", name)


def _ips(lines: Lines, batch: Batch, fail: Fail) -> None:
    for no, raw in lines:
        fields = re.split("[#;]", raw, maxsplit=1)[0].split()
        if not fields:
            continue
        if len(fields) > 1:
            raise fail(no, f"expected one address or network per line: {_shown(raw)}")
        try:
            kind, norm, span = address_span(fields[0])
        except ValueError:
            raise fail(no, f"not an IP address or CIDR network: {_shown(fields[0])}") from None
        batch.add(no, norm, kind, None, span)


def _csv_rows(lines: Lines, fail: Fail, skipinitialspace: bool = False
              ) -> tuple[list[str] | None, Iterator[tuple[int, list[str]]]]:
    """The header named by the last ``# `` comment before the data (abuse.ch style), and
    the data rows with their line numbers (of a row's last line), as a stream."""
    it = iter(lines)
    header: list[str] | None = None
    first: tuple[int, str] | None = None
    for no, raw in it:
        if raw.startswith("#"):
            text = raw.lstrip("#").strip()
            if "," in text:
                try:
                    header = [h.strip().lower() for h in
                              next(csv.reader([text], skipinitialspace=skipinitialspace))]
                except csv.Error:
                    header = None
        elif raw.strip():
            first = (no, raw)
            break
    at = [0]

    def data() -> Iterator[str]:
        for no, raw in itertools.chain([first] if first else [], it):
            if raw.startswith("#") or not raw.strip():
                continue
            at[0] = no
            yield raw

    def rows() -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(data(), skipinitialspace=skipinitialspace)
        try:
            for row in reader:
                yield at[0], row
        except csv.Error as exc:
            raise fail(at[0], f"bad CSV: {exc}") from None

    return header, rows()


def _columns(fail: Fail, no: int, header: list[str] | None, row: list[str],
             known: tuple[tuple[str, ...], ...]) -> dict[str, str]:
    names = header or next((list(k) for k in known if len(k) == len(row)), list(known[0]))
    if len(row) != len(names):
        raise fail(no, f"expected {len(names)} CSV fields, found {len(row)}")
    return dict(zip(names, row, strict=True))


def _url(fail: Fail, no: int, batch: Batch, url: str, threat: str | None,
         tags: list[str], first_seen: str | None) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        host = None
    if not host or not parts.scheme:
        raise fail(no, f"not a URL with a host: {_shown(url)}")
    try:
        _, _, span = address_span(host)
        batch.add(no, url.strip(), "url", None, span, threat, tags, first_seen)
        return
    except ValueError:
        pass
    name = domain(host)
    if name is None:
        raise fail(no, f"the host of this URL is not a domain name: {_shown(url)}")
    batch.add(no, url.strip(), "url", name, None, threat, tags, first_seen)


def _urlhaus(lines: Lines, batch: Batch, fail: Fail) -> None:
    header, rows = _csv_rows(lines, fail)
    if header is not None and "url" not in header:
        header = None  # a comment with commas that is not the header
    for no, row in rows:
        f = _columns(fail, no, header, row, URLHAUS_COLUMNS)
        _url(fail, no, batch, f.get("url", ""), f.get("threat"), _tags(f.get("tags")),
             _when(fail, no, f.get("dateadded")))


def _threatfox(lines: Lines, batch: Batch, fail: Fail) -> None:
    header, rows = _csv_rows(lines, fail, skipinitialspace=True)
    if header is not None and "ioc_value" not in header:
        header = None
    for no, row in rows:
        f = _columns(fail, no, header, row, (THREATFOX_COLUMNS,))
        value, kind = f.get("ioc_value", "").strip(), f.get("ioc_type", "").strip()
        tags = _tags(f.get("tags"))
        malware = (f.get("malware_printable") or "").strip()
        if malware and malware.lower() != "unknown malware" and malware not in tags:
            tags.append(malware)
        threat, seen = f.get("threat_type"), _when(fail, no, f.get("first_seen_utc"))
        if kind == "domain":
            name = domain(value)
            if name is None:
                raise fail(no, f"not a domain name: {_shown(value)}")
            batch.add(no, name, "domain", name, None, threat, tags, seen)
        elif kind == "ip:port":
            host, sep, port = value.rpartition(":")
            host = host.strip("[]")
            try:
                if not sep or not port.isdigit():
                    raise ValueError(value)
                _, _, span = address_span(host)
            except ValueError:
                raise fail(no, f"not an ip:port: {_shown(value)}") from None
            batch.add(no, value, "ip", None, span, threat, tags, seen)
        elif kind == "url":
            _url(fail, no, batch, value, threat, tags, seen)
        else:
            batch.skip(f"{kind[:40] if kind else 'untyped'} indicators")  # hashes: nothing to match


def _spamhaus(lines: Lines, batch: Batch, fail: Fail) -> None:
    for no, raw in lines:
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise fail(no, f"not a JSON object: {exc.args[0].split(':')[0]}") from None
        except RecursionError:
            raise fail(no, "not a JSON object: nested too deeply") from None
        if not isinstance(obj, dict):
            raise fail(no, "not a JSON object")
        if obj.get("type") == "metadata":
            continue
        cidr = obj.get("cidr")
        if not isinstance(cidr, str):
            raise fail(no, "no \"cidr\" field (ASN-DROP lists cannot be matched)")
        try:
            kind, norm, span = address_span(cidr)
        except ValueError:
            raise fail(no, f"not a CIDR network: {_shown(cidr)}") from None
        tags = [str(obj[k]) for k in ("sblid", "rir") if obj.get(k)]
        batch.add(no, norm, kind, None, span, threat="drop", tags=tags)


PARSERS: dict[str, Callable[[Lines, Batch, Fail], None]] = {
    "hosts": _hosts, "domains": _domains, "ips": _ips, "urlhaus-csv": _urlhaus,
    "threatfox-csv": _threatfox, "spamhaus-drop": _spamhaus}


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
