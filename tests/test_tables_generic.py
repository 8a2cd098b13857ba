"""Checks every declared table gets, derived from its declaration alone."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsql.collect import Collection, Need, State
from netsql.docgen import generated
from netsql.engine import Engine
from netsql.registry import default_tables

TABLES = default_tables()
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    e = Engine(state=dns_state(tmp_path_factory.mktemp("dns")))
    e.declare()
    return e


@pytest.fixture(autouse=True, scope="module")
def a_connection() -> Iterator[None]:
    """One established TCP connection, so flows has a row on any host."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            server, _ = listener.accept()
            with server:
                client.sendall(b"hello")
                yield


def test_table_names_unique() -> None:
    names = [t.name for t in TABLES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_declaration_is_complete(table: object) -> None:
    from netsql.schema import Table

    assert isinstance(table, Table)
    assert table.description and table.examples and table.platforms
    names = [c.name for c in table.columns]
    assert len(names) == len(set(names))
    for c in table.columns:
        assert c.description.strip(), f"{table.name}.{c.name} has no description"


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_duckdb_schema_matches_declaration(engine: Engine, table: object) -> None:
    from netsql.schema import Table

    assert isinstance(table, Table)
    got = engine.con.execute(
        "SELECT column_name, data_type, comment FROM duckdb_columns() "
        "WHERE table_name = ? AND schema_name = 'main' ORDER BY column_index",
        [table.name]).fetchall()
    assert got == [(c.name, c.type, c.description) for c in table.columns]


def dns_state(tmp: Path) -> State:
    """A DNS source for the tables that read one: a capture file made here."""
    import dns.message
    import dns.rrset
    import dpkt

    from netsql.capture.manager import PcapSource
    from tests.dnsutil import link_frame, udp_ip

    q = dns.message.make_query("www.example.test", "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.test.", 60, "IN", "A", "192.0.2.7"))
    path = tmp / "one.pcap"
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        for ts, (a, b, sp, dp, wire) in enumerate([
                ("10.0.0.2", "10.0.0.1", 40000, 53, q.to_wire()),
                ("10.0.0.1", "10.0.0.2", 53, 40000, r.to_wire())]):
            w.writepkt(link_frame("ethernet", udp_ip(a, b, sp, dp, wire))[1], ts=1e9 + ts)
    return State(pcap=PcapSource([str(path)]))


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_collector_returns_declared_columns(table: object, tmp_path: Path) -> None:
    from netsql.schema import Table

    assert isinstance(table, Table)
    data = table.collect(Collection(state=dns_state(tmp_path)), Need())
    assert set(data) <= set(table.column_names), set(data) - set(table.column_names)
    lengths = {len(v) for v in data.values()}
    assert len(lengths) == 1, lengths
    assert lengths.pop() > 0, f"{table.name} collected no rows on this host"


EXAMPLES = [(t.name, ex) for t in TABLES for ex in t.examples]


@pytest.mark.parametrize("name,sql", EXAMPLES, ids=[f"{n}-{i}" for i, (n, _) in
                                                    enumerate(EXAMPLES)])
def test_examples_run(engine: Engine, name: str, sql: str) -> None:
    results = list(engine.run(sql))
    assert results and results[-1].data is not None
    assert name in results[-1].collected


def test_generated_docs_are_current() -> None:
    for path, text in generated(ROOT).items():
        assert path.exists(), f"{path} missing: run python -m netsql.docgen"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python -m netsql.docgen")
