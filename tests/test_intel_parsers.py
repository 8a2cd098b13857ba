"""Feed formats: each parsed from a fixture written like the real feed (headers,
comments, quoting), detected without --format, and refused, naming the line, when broken."""

from __future__ import annotations

import gzip
import io
import ipaddress
import zipfile
from pathlib import Path

import pytest

from netsql.intel.files import detect, parse, read_lines
from netsql.intel.parsers import V4_BASE, Batch, ParseError

FIX = Path(__file__).parent / "fixtures" / "intel"


def rows(batch: Batch) -> list[tuple[str, str, str | None]]:
    return list(zip(batch.indicator, batch.kind, batch.host, strict=True))


def span(text: str) -> tuple[str, str]:
    net = ipaddress.ip_network(text, strict=False)
    base = V4_BASE if net.version == 4 else 0
    return (str(int(net.network_address) + base), str(int(net.broadcast_address) + base))


def test_hosts_skips_the_localhost_preamble() -> None:
    b = parse(str(FIX / "hosts"))
    assert b.format == "hosts"
    assert rows(b) == [(n, "domain", n) for n in (
        "ads.tracker.example", "metrics.tracker.example", "evil.badsite.test",
        "sub2.evil.badsite.test", "telemetry.example", "xn--80ak6aa92e.example")]
    assert b.skipped == {"localhost entries": 13, "addresses as names": 1}
    assert b.duplicates == 1
    assert b.line[:3] == [39, 40, 41]  # provenance: the line each came from


def test_hosts_with_crlf_line_ends() -> None:
    b = parse(str(FIX / "hosts-crlf"))
    assert (b.format, b.indicator) == ("hosts", ["crlf-one.example", "crlf-two.example"])


def test_domains_normalised() -> None:
    b = parse(str(FIX / "domains.txt"))
    assert b.format == "domains"
    assert b.indicator == ["evil.com", "phish.example", "wild.example", "dotted.example",
                           "xn--bcher-kva.example", "a_b.underscore.example",
                           "tracker.example"]
    assert set(b.kind) == {"domain"} and b.host == b.indicator


def test_ips_and_networks() -> None:
    b = parse(str(FIX / "ips.txt"))
    assert b.format == "ips"
    assert list(zip(b.indicator, b.kind, strict=True)) == [
        ("192.0.2.1", "ip"), ("198.51.100.0/24", "cidr"), ("203.0.113.0/24", "cidr"),
        ("2001:db8:bad::/48", "cidr"), ("2001:db8::dead:beef", "ip")]
    assert (b.lo[1], b.hi[1]) == span("198.51.100.0/24")
    assert (b.lo[3], b.hi[3]) == span("2001:db8:bad::/48")
    assert b.lo[0] == b.hi[0] == span("192.0.2.1/32")[0]
    assert all(h is None for h in b.host)


def test_urlhaus_csv() -> None:
    b = parse(str(FIX / "urlhaus.csv"))
    assert b.format == "urlhaus-csv"
    assert rows(b) == [
        ("http://192.0.2.77:44210/i", "url", None),
        ("https://cdn.evil-payload.test/files/invoice.zip", "url", "cdn.evil-payload.test"),
        ("http://[2001:db8:bad::7]:8080/x.sh", "url", None),
        ('http://WWW.Dropper.Test/a/b.php?id=1,2&x="q"', "url", "www.dropper.test")]
    assert b.lo[0] == span("192.0.2.77")[0] and b.lo[2] == span("2001:db8:bad::7")[0]
    assert b.threat == ["malware_download"] * 4
    assert b.tags == [["32-bit", "elf", "mips", "Mozi"], ["zip", "AgentTesla"], ["sh"], None]
    assert b.first_seen[0] == "2026-01-02 03:01:10"


def test_threatfox_csv() -> None:
    b = parse(str(FIX / "threatfox.csv"))
    assert b.format == "threatfox-csv"
    assert rows(b) == [
        ("203.0.113.45:443", "ip", None),
        ("c2.evil-panel.test", "domain", "c2.evil-panel.test"),
        ("http://stage.evil-panel.test/gate.php", "url", "stage.evil-panel.test"),
        ("[2001:db8:c2::5]:8443", "ip", None)]
    assert b.lo[0] == span("203.0.113.45")[0] and b.lo[3] == span("2001:db8:c2::5")[0]
    assert b.threat == ["botnet_cc", "botnet_cc", "payload_delivery", "botnet_cc"]
    assert b.tags[0] == ["c2", "CobaltStrike", "Cobalt Strike"]  # + malware_printable
    assert b.tags[2] is None  # "None" tags, "Unknown malware"
    assert b.skipped == {"md5_hash indicators": 1}  # hashes match nothing on the network


@pytest.mark.parametrize("name,want", [
    ("drop_v4.json", [("192.0.2.0/24", ["SBL000101", "arin"]),
                      ("198.51.100.0/25", ["SBL000102", "ripencc"])]),
    ("drop_v6.json", [("2001:db8:dead::/48", ["SBL000201", "apnic"])]),
])
def test_spamhaus_drop_json(name: str, want: list[tuple[str, list[str]]]) -> None:
    b = parse(str(FIX / name))
    assert b.format == "spamhaus-drop"
    assert list(zip(b.indicator, b.tags, strict=True)) == want
    assert set(b.kind) == {"cidr"} and set(b.threat) == {"drop"}


@pytest.mark.parametrize("name,fmt", [
    ("hosts", "hosts"), ("hosts-crlf", "hosts"), ("domains.txt", "domains"),
    ("ips.txt", "ips"), ("urlhaus.csv", "urlhaus-csv"), ("threatfox.csv", "threatfox-csv"),
    ("drop_v4.json", "spamhaus-drop"), ("drop_v6.json", "spamhaus-drop"),
])
def test_detection(name: str, fmt: str) -> None:
    lines, _ = read_lines(str(FIX / name))
    assert detect(name, lines) == fmt


def test_detection_says_when_unsure(tmp_path: Path) -> None:
    f = tmp_path / "mixed.txt"
    f.write_text("# mixed\nevil.example\n192.0.2.1\n")
    with pytest.raises(ParseError) as e:
        parse(str(f))
    assert str(e.value) == (f"{f}: cannot tell the format (line 2 looks like domains, line 3 "
                            "looks like ips); pass --format, one of hosts, domains, ips, "
                            "urlhaus-csv, threatfox-csv, spamhaus-drop")
    f.write_text("# nothing but comments\n\n")
    with pytest.raises(ParseError, match="no indicators to tell the format by"):
        parse(str(f))
    assert len(parse(str(f), "domains")) == 0  # an empty list is fine when named


# A bad line in each format, inserted after the first data line: nothing is returned and
# the error names the file and the line.
BROKEN = [
    ("hosts", "0.0.0.0 ok.example\nthis is not a hosts line\n", "not a hosts line"),
    ("hosts", "0.0.0.0 ok.example\n0.0.0.0 bad_name!.example\n", "not a domain name"),
    ("domains.txt", "ok.example\nhttp://not-a-domain.example/\n", "not a domain name"),
    ("domains.txt", "ok.example\n0.0.0.0 hosts-line.example\n", "use --format hosts"),
    ("ips.txt", "192.0.2.1\n192.0.2.300\n", "not an IP address or CIDR network"),
    ("ips.txt", "192.0.2.1\n10.0.0.0/33\n", "not an IP address or CIDR network"),
    ("urlhaus.csv", None, "expected 9 CSV fields, found 3"),
    ("threatfox.csv", None, "not an ip:port"),
    ("drop_v4.json", '{"cidr":"192.0.2.0/24"}\n{"cidr":"192.0.2.0/24",\n', "not a JSON object"),
    ("drop_v4.json", '{"cidr":"192.0.2.0/24"}\n{"cidr":"banana"}\n', "not a CIDR network"),
]


@pytest.mark.parametrize("fixture,body,message", BROKEN)
def test_broken_line_is_named(tmp_path: Path, fixture: str, body: str | None,
                              message: str) -> None:
    good = parse(str(FIX / fixture))
    text = (FIX / fixture).read_text()
    lines = text.split("\n")
    if body is None:  # a CSV fixture: break its second data row
        first = good.line[0]
        bad = first + 1
        lines[bad - 1] = (
            '"1","2026-01-02 00:00:00","http://x.example/"' if fixture == "urlhaus.csv" else
            lines[bad - 1].replace('"c2.evil-panel.test", "domain"', '"192.0.2.1:http", "ip:port"'))
    else:
        head = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
        at = head[-1] + 1
        lines[at:at] = body.rstrip("\n").split("\n")
        bad = at + 2
    f = tmp_path / fixture
    f.write_text("\n".join(lines))
    with pytest.raises(ParseError) as e:
        parse(str(f), good.format)
    assert e.value.line == bad, str(e.value)
    assert str(e.value).startswith(f"{f}:{bad}: ")
    assert message in str(e.value)


def test_not_text(tmp_path: Path) -> None:
    f = tmp_path / "bin"
    f.write_bytes(b"ok.example\n\xff\xfe\x00garbage\n")
    with pytest.raises(ParseError, match=r":2: not UTF-8 text"):
        parse(str(f), "domains")


def test_gzip_and_zip_are_unpacked(tmp_path: Path) -> None:
    raw = (FIX / "urlhaus.csv").read_bytes()
    gz = tmp_path / "csv.txt.gz"
    gz.write_bytes(gzip.compress(raw))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("csv.txt", raw)
    zp = tmp_path / "csv.txt.zip"
    zp.write_bytes(zipped.getvalue())
    assert parse(str(gz)).indicator == parse(str(zp)).indicator == parse(
        str(FIX / "urlhaus.csv")).indicator
    with zipfile.ZipFile(zp, "a") as z:
        z.writestr("other.txt", raw)
    with pytest.raises(ParseError, match="a zip archive of 2 files"):
        parse(str(zp))
