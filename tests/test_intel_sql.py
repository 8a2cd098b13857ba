"""Threat intel in SQL: the engine's lazy setup hook, matching semantics (label
boundaries, IPv4/IPv6 networks), the flagged view, and the responders' functions."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsql.collect import NO_DNS_SOURCE, Collection, Need, State
from netsql.engine import Engine, NetsqlError
from netsql.intel import db, functions
from netsql.intel.files import parse
from netsql.registry import default_tables
from netsql.schema import Setup

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "intel"


def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    res = list(engine.run(sql))[-1]
    assert res.data is not None
    return list(res.data.rows)


# -- the engine's hook -----------------------------------------------------------------
class Recorded:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, con: duckdb.DuckDBPyConnection, state: State) -> Sequence[str]:
        self.calls += 1
        if self.fail:
            raise NetsqlError("the thing is broken")
        con.execute("CREATE TEMP VIEW thing AS SELECT count(*) AS n FROM processes")
        return [f"set up with {state.intel_db}"]


def test_setup_runs_lazily_once_and_declares_its_tables() -> None:
    run = Recorded()
    engine = Engine(state=State(intel_db="42"),
                    setups=[Setup("t", ("thing",), run, ("processes",))])
    (res,) = engine.run("SELECT 1")
    assert run.calls == 0 and res.warnings == [] and engine._created == set()
    (res,) = engine.run("SELECT n > 0 FROM thing")
    assert run.calls == 1 and res.warnings == ["set up with 42"]
    assert res.data is not None and res.data.rows == [(True,)]
    assert "processes" in res.collected
    (res,) = engine.run("SELECT n > 0 FROM thing")
    assert run.calls == 1 and res.warnings == []


def test_failing_setup_fails_the_statement_not_a_catalog_query() -> None:
    run = Recorded(fail=True)
    engine = Engine(setups=[Setup("t", ("thing",), run)])
    with pytest.raises(NetsqlError, match="the thing is broken"):
        list(engine.run("SELECT * FROM thing"))
    (res,) = engine.run("SELECT count(*) FROM duckdb_tables()")
    assert res.warnings == ["the thing is broken"] and run.calls == 2
    with pytest.raises(NetsqlError, match="the thing is broken"):  # retried, not cached
        list(engine.run("SELECT * FROM thing"))


def test_intel_setup_is_not_paid_by_other_statements() -> None:
    engine = Engine(state=State(intel_db="/nonexistent/intel.duckdb"))
    list(engine.run("SELECT 1; SELECT count(*) FROM processes"))
    assert engine._set_up == set()
    assert "intel_db" not in {r[0] for r in engine.con.execute(
        "SELECT database_name FROM duckdb_databases()").fetchall()}
    (res,) = engine.run("SELECT domain_entropy('abc.com')")
    assert engine._set_up == {"intel-functions"}  # functions only: no database, no tables


def test_no_database_gives_empty_views_and_says_so(tmp_path: Path) -> None:
    engine = Engine(state=State(intel_db=str(tmp_path / "none.duckdb")))
    (res,) = engine.run("SELECT count(*) FROM intel")
    assert res.data is not None and res.data.rows == [(0,)]
    assert res.warnings == [f"no threat-intel lists: {tmp_path / 'none.duckdb'} does not exist "
                            "(import one with `netsql intel import FILE`, or name another "
                            "with --intel-db)"]
    assert not (tmp_path / "none.duckdb").exists()
    assert engine._created == set()  # intel alone declares no virtual table
    (res,) = engine.run("SELECT count(*) FROM flagged")
    assert res.data is not None and res.data.rows == [(0,)] and res.warnings == [
        "dns_queries is empty: no capture ran; use --capture SECONDS to capture live first, "
        "or --pcap FILE to read a capture file", NO_DNS_SOURCE]


# -- matching ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def intel_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("intel") / "intel.duckdb")
    con = db.open_db(path)
    lists = tmp_path_factory.mktemp("lists")
    (lists / "doms.txt").write_text("evil.com\nbad.co.uk\n")
    (lists / "nets.txt").write_text("192.0.2.0/24\n2001:db8:bad::/48\n198.51.100.7\n")
    for file, source in ((lists / "doms.txt", "doms"), (lists / "nets.txt", "nets"),
                         (FIX / "urlhaus.csv", "urlhaus"), (FIX / "threatfox.csv", "tf")):
        db.import_batch(con, parse(str(file)), source, str(file), "")
    con.close()
    return path


@pytest.fixture
def engine(intel_db: str) -> Engine:
    return Engine(state=State(intel_db=intel_db))


@pytest.mark.parametrize("name,hit", [
    ("evil.com", True), ("a.evil.com", True), ("x.y.evil.com", True), ("EVIL.COM.", True),
    ("notevil.com", False), ("evil.com.au", False), ("evil.co", False), ("com", False),
    ("bad.co.uk", True), ("www.bad.co.uk", True), ("co.uk", False),
    # URL indicators match their host exactly: the rest of a shared host is not listed
    ("cdn.evil-payload.test", True), ("x.cdn.evil-payload.test", False),
    ("evil-payload.test", False), ("www.dropper.test", True),
    ("c2.evil-panel.test", True), ("a.c2.evil-panel.test", True),  # ThreatFox domain
])
def test_domains_match_on_label_boundaries(engine: Engine, name: str, hit: bool) -> None:
    got = rows(engine, f"SELECT intel_domain_match('{name}'), "
                       f"(SELECT count(*) FROM intel_lookup('{name}'))")
    assert (len(got[0][0]) > 0, got[0][1] > 0) == (hit, hit), got


def test_domain_match_reports_indicator_and_source(engine: Engine) -> None:
    assert rows(engine, "SELECT intel_domain_match('a.evil.com')") == [(
        [{"indicator": "evil.com", "kind": "domain", "source": "doms", "threat": None}],)]
    assert rows(engine, "SELECT domain_match('a.evil.com', 'evil.com'), "
                        "domain_match('notevil.com', 'evil.com'), "
                        "domain_match('Evil.Com.', 'evil.com')") == [(True, False, True)]


@pytest.mark.parametrize("address,sources", [
    ("192.0.2.0", ["nets"]), ("192.0.2.255", ["nets"]), ("192.0.3.0", []),
    ("192.0.1.255", []), ("::ffff:192.0.2.9", ["nets"]),  # an IPv4-mapped socket address
    ("198.51.100.7", ["nets"]), ("198.51.100.8", []),
    ("2001:db8:bad::1", ["nets"]), ("2001:db8:bad:ffff:ffff:ffff:ffff:ffff", ["nets"]),
    ("2001:db8:bae::", []), ("2001:DB8:BAD:0:0:0:0:9", ["nets"]),
    ("192.0.2.77", ["nets", "urlhaus"]),  # a URL whose host is an address
    ("203.0.113.45", ["tf"]), ("2001:db8:c2::5", ["tf"]),  # ThreatFox ip:port
    ("not an address", []), ("", []),
])
def test_addresses_match_networks(engine: Engine, address: str, sources: list[str]) -> None:
    (got,) = rows(engine, f"SELECT intel_ip_match('{address}')")
    assert sorted(m["source"] for m in got[0]) == sources


def test_intel_view_columns(engine: Engine) -> None:
    res = list(engine.run("SELECT * FROM intel WHERE source = 'tf' ORDER BY indicator"))[-1]
    assert res.data is not None
    assert res.data.columns == [c[0] for c in functions.INTEL_COLUMNS]
    assert res.data.types == [c[1] for c in functions.INTEL_COLUMNS]
    first = res.data.rows[0]
    assert first[:5] == ("203.0.113.45:443", "ip", "tf", "botnet_cc",
                         ["c2", "CobaltStrike", "Cobalt Strike"])
    assert str(first[5]) == "2026-01-02 02:55:12" and first[6] is not None
    assert rows(engine, "SELECT source, indicators FROM intel_sources ORDER BY source") == [
        ("doms", 2), ("nets", 3), ("tf", 4), ("urlhaus", 4)]


# -- flagged -------------------------------------------------------------------------------
DNS: dict[str, list[Any]] = {  # a DNS capture, as the dns_queries collector would give it
    "ts": [1767322800.0 + i for i in range(5)],
    "pid": [100, 101, 102, 103, None],
    "process": ["curl", "curl", "wget", "app", None],
    "query": ["a.evil.com", "notevil.com", "cdn.example.net", "img.example.org", "evil.com"],
    "answers": [["192.0.2.1"], ["203.0.113.9"], ["c.evil.com", "203.0.113.10"],
                ["198.51.100.7"], []],
    "answer_types": [["A"], ["A"], ["CNAME", "A"], ["A"], []],
    "qtype": ["A"] * 5,
}
SOCKETS: dict[str, list[Any]] = {
    "pid": [200, 201, 202, None],
    "remote_address": ["203.0.113.5", "::ffff:192.0.2.44", "203.0.113.6", "2001:db8:bad::80"],
    "remote_port": [443, 80, 443, 8080],
    "remote_host": ["x.evil.com", None, "notevil.com", None],
    "inode": [1, 2, 3, 4],
}
FLOWS: dict[str, list[Any]] = {  # TCP rows duplicate sockets: only the wire's flows count
    "pid": [300, 301, None], "process": ["dnscat", "curl", None],
    "protocol": ["udp", "tcp", "icmp"],
    "remote_address": ["198.51.100.7", "192.0.2.1", "2001:db8:bad::1"],
    "remote_port": [53, 443, None], "remote_host": [None, "a.evil.com", None],
}
PROCS: dict[str, list[Any]] = {"pid": [200, 201, 202], "name": ["beacon", "nc", "firefox"]}


def stand_in(data: dict[str, list[Any]]) -> Any:
    def collect(coll: Collection, need: Need) -> dict[str, list[Any]]:
        return data
    return collect


def test_flagged(intel_db: str) -> None:
    fakes = {"dns_queries": DNS, "sockets": SOCKETS, "processes": PROCS, "flows": FLOWS}
    tables = [dataclasses.replace(t, collect=stand_in(fakes[t.name])) if t.name in fakes else t
              for t in default_tables()]
    engine = Engine(tables, state=State(intel_db=intel_db))
    res = list(engine.run("SELECT seen_in, pid, process, name, address, port, matched, "
                          "indicator, kind, source FROM flagged "
                          "ORDER BY seen_in, pid NULLS LAST, matched"))[-1]
    assert res.data is not None
    assert res.data.rows == [
        ("dns_queries", 100, "curl", "a.evil.com", None, None, "192.0.2.1", "192.0.2.0/24",
         "cidr", "nets"),
        ("dns_queries", 100, "curl", "a.evil.com", None, None, "a.evil.com", "evil.com",
         "domain", "doms"),
        ("dns_queries", 102, "wget", "cdn.example.net", None, None, "c.evil.com", "evil.com",
         "domain", "doms"),  # through a CNAME
        ("dns_queries", 103, "app", "img.example.org", None, None, "198.51.100.7",
         "198.51.100.7", "ip", "nets"),  # the answer is listed
        ("dns_queries", None, None, "evil.com", None, None, "evil.com", "evil.com", "domain",
         "doms"),
        ("flows", 300, "dnscat", None, "198.51.100.7", 53, "198.51.100.7", "198.51.100.7",
         "ip", "nets"),
        ("flows", None, None, None, "2001:db8:bad::1", None, "2001:db8:bad::1",
         "2001:db8:bad::/48", "cidr", "nets"),
        ("sockets", 200, "beacon", "x.evil.com", "203.0.113.5", 443, "x.evil.com", "evil.com",
         "domain", "doms"),
        ("sockets", 201, "nc", None, "::ffff:192.0.2.44", 80, "::ffff:192.0.2.44",
         "192.0.2.0/24", "cidr", "nets"),
        ("sockets", None, None, None, "2001:db8:bad::80", 8080, "2001:db8:bad::80",
         "2001:db8:bad::/48", "cidr", "nets"),
    ]
    assert res.data.columns[:7] == ["seen_in", "pid", "process", "name", "address", "port",
                                    "matched"]
    full = list(engine.run("SELECT * FROM flagged LIMIT 1"))[-1]
    assert full.data is not None
    assert full.data.columns == [c[0] for c in functions.FLAGGED_COLUMNS]


def test_flagged_without_some_tables(intel_db: str) -> None:
    tables = [dataclasses.replace(t, collect=stand_in(DNS)) for t in default_tables()
              if t.name == "dns_queries"]
    engine = Engine(tables, state=State(intel_db=intel_db))
    assert rows(engine, "SELECT DISTINCT seen_in FROM flagged") == [("dns_queries",)]
    assert rows(Engine([], state=State(intel_db=intel_db)),
                "SELECT count(*) FROM flagged") == [(0,)]


# -- responders' functions -----------------------------------------------------------
@pytest.fixture(scope="module")
def fn() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(functions.macros_sql())
    return con


def entropy(s: str) -> float:
    return -sum(s.count(c) / len(s) * math.log2(s.count(c) / len(s)) for c in set(s)) if s else 0.0


@pytest.mark.parametrize("name,registered,sub,suffix", [
    ("www.example.com", "example.com", "www", "com"),
    ("a.b.example.co.uk.", "example.co.uk", "a.b", "co.uk"),
    ("Evil.DuckDNS.org", "evil.duckdns.org", "", "duckdns.org"),
    ("x.bucket.s3.amazonaws.com", "bucket.s3.amazonaws.com", "x", "s3.amazonaws.com"),
    ("localhost", "localhost", "", "localhost"),
    ("co.uk", "co.uk", "", "co.uk"),
])
def test_registered_domain(fn: duckdb.DuckDBPyConnection, name: str, registered: str,
                           sub: str, suffix: str) -> None:
    assert fn.execute("SELECT registered_domain(?), subdomain(?), public_suffix(?)",
                      [name, name, name]).fetchone() == (registered, sub, suffix)


def test_generated_name_heuristics(fn: duckdb.DuckDBPyConnection) -> None:
    got = fn.execute("""
        SELECT n, round(domain_entropy(n), 3), round(domain_digit_ratio(n), 3),
               domain_consonant_run(n)
        FROM unnest(['www.google.com', 'kq3v9z7x1bt8.invalid', 'mail.xkcdqwrtzp.net',
                     'a.b.example.co.uk']) t(n)""").fetchall()
    assert got == [
        ("www.google.com", round(entropy("google"), 3), 0.0, 2),
        ("kq3v9z7x1bt8.invalid", round(entropy("kq3v9z7x1bt8"), 3), 0.417, 2),
        ("mail.xkcdqwrtzp.net", round(entropy("xkcdqwrtzp"), 3), 0.0, 10),
        ("a.b.example.co.uk", round(entropy("example"), 3), 0.0, 3),
    ]
    assert fn.execute("SELECT domain_suffixes('A.b.Evil.com.'), domain_labels('a.b'), "
                      "string_entropy(''), string_entropy(NULL)").fetchone() == (
        ["a.b.evil.com", "b.evil.com", "evil.com", "com"], ["a", "b"], 0.0, None)


# Property tests run many cases per query: binding the nested macros costs milliseconds.
@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1,
                        max_size=40), min_size=1, max_size=50))
def test_string_entropy_is_shannon(fn: duckdb.DuckDBPyConnection, texts: list[str]) -> None:
    got = fn.execute("SELECT string_entropy(s) FROM unnest(?) WITH ORDINALITY t(s, i) "
                     "ORDER BY i", [texts]).fetchall()
    assert [g for (g,) in got] == pytest.approx([entropy(s) for s in texts], abs=1e-9)


def _num(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return int(addr) + (0xFFFF_0000_0000 if addr.version == 4 else 0)


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(addresses, st.booleans()), min_size=1, max_size=50))
def test_ip_num_agrees_with_ipaddress(fn: duckdb.DuckDBPyConnection,
                                      cases: list[tuple[Any, bool]]) -> None:
    texts = [a.exploded if exploded else str(a) for a, exploded in cases]
    got = fn.execute("SELECT ip_num(a)::VARCHAR FROM unnest(?) WITH ORDINALITY t(a, i) "
                     "ORDER BY i", [texts]).fetchall()
    assert [int(g) for (g,) in got] == [_num(a) for a, _ in cases]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(addresses, st.integers(0, 128), addresses), min_size=1,
                max_size=50))
def test_ip_in_cidr_agrees_with_ipaddress(fn: duckdb.DuckDBPyConnection,
                                          cases: list[tuple[Any, int, Any]]) -> None:
    nets, probes, want = [], [], []
    for base, prefix, probe in cases:
        net = ipaddress.ip_network((base, min(prefix, base.max_prefixlen)), strict=False)
        if probe.version != net.version:  # same family: probe inside the network too
            probe = base
        nets.append(str(net))
        probes.append(str(probe))
        want.append((probe in net, str(_num(net.network_address)),
                     str(_num(net.broadcast_address))))
    got = fn.execute("SELECT ip_in_cidr(c[1], c[2]), cidr_start(c[2])::VARCHAR, "
                     "cidr_end(c[2])::VARCHAR FROM unnest(?) WITH ORDINALITY t(c, i) "
                     "ORDER BY i", [[list(c) for c in zip(probes, nets, strict=True)]]
                     ).fetchall()
    assert got == want


@pytest.mark.parametrize("bad", ["256.1.1.1", "1.2.3", "01.2.3.4", "1::2::3", "12345::",
                                 "1:2:3:4:5:6:7:8:9", "gggg::1", "", "evil.com"])
def test_ip_num_rejects(fn: duckdb.DuckDBPyConnection, bad: str) -> None:
    assert fn.execute("SELECT ip_num(?)", [bad]).fetchone() == (None,)


# -- the docs cover what the code offers ------------------------------------------------
def test_docs_cover_functions_and_columns() -> None:
    text = (ROOT / "docs" / "intel.md").read_text()
    lookups = re.findall(r"CREATE OR REPLACE TEMP MACRO (\w+)", functions.VIEWS_SQL)
    assert lookups == ["intel_domain_match", "intel_ip_match", "intel_lookup"]
    for name in (*functions.PUBLIC, *lookups):
        assert re.search(rf"`{name}\(", text), f"docs/intel.md does not document {name}()"
    for view, columns in (("intel", functions.INTEL_COLUMNS),
                          ("flagged", functions.FLAGGED_COLUMNS)):
        for col, _, _ in columns:
            assert f"| `{col}` |" in text, f"docs/intel.md lacks {view}.{col}"
