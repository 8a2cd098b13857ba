"""Row identity, added/removed rows and per-second rates: on real query results (sockets
and flows of connections this test opens) and on the edge cases."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsql.engine import Engine
from netsql.registry import default_tables
from netsql.watch.diff import (
    COUNTER,
    GAUGE,
    GONE,
    KEY,
    NEW,
    SAME,
    Change,
    Differ,
    Shape,
    column_role,
    compare,
    rate,
)
from netsql.watch.runner import Watch
from netsql.watch.view import column_rates


def listener() -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    return srv


def connect(srv: socket.socket) -> tuple[socket.socket, socket.socket]:
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()
    return c, s


@pytest.fixture
def srv() -> Iterator[socket.socket]:
    s = listener()
    yield s
    s.close()


def test_roles_of_the_real_tables() -> None:
    tables = {t.name: t for t in default_tables()}

    def role(table: str, column: str) -> str:
        return column_role(column, tables[table].column(column).type)

    for col in ("pid", "fd", "local_port", "remote_port", "uid", "inode", "net_namespace",
                "state", "remote_address", "owners"):
        assert role("sockets", col) == KEY, col
    assert role("sockets", "tx_queue") == role("sockets", "rx_queue") == GAUGE
    assert role("processes", "rss") == role("processes", "threads") == GAUGE
    assert role("processes", "start_time") == KEY
    if "flows" in tables:
        for col in ("bytes_sent", "bytes_received", "bytes_acked", "segs_out", "segs_in",
                    "retransmits", "packets_in"):
            assert role("flows", col) == COUNTER, col
        assert role("flows", "rtt") == role("flows", "last_receive") == GAUGE


@pytest.mark.parametrize(("name", "type_", "role"), [
    ("count_star()", "BIGINT", COUNTER),
    ("sum(bytes_sent)", "HUGEINT", COUNTER),
    ("rx_packets", "UBIGINT", COUNTER),
    ("tx_queue", "BIGINT", GAUGE),
    ("n", "BIGINT", GAUGE),
    ("percent", "DOUBLE", GAUGE),
    ("score", "DECIMAL(5,2)", GAUGE),
    ("ago", "INTERVAL", GAUGE),
    ("last_seen", "TIMESTAMP", GAUGE),
    ("ts", "TIMESTAMP", KEY),
    ("bytes_sent", "VARCHAR", KEY),  # text is never a measure
    ("answers", "VARCHAR[]", KEY),
])
def test_roles_by_name_and_type(name: str, type_: str, role: str) -> None:
    assert column_role(name, type_) == role


def test_compare_matches_by_key_and_counts_duplicates() -> None:
    shape = Shape.of(["proto", "port", "bytes_sent"], ["VARCHAR", "INTEGER", "BIGINT"])
    old = [("udp", 53, 10), ("udp", 53, 20), ("tcp", 80, 5), ("tcp", 22, 1)]
    new = [("udp", 53, 11), ("tcp", 80, 9), ("tcp", 443, 0)]
    change = compare(shape, old, new, 2.0)
    assert [(e.values, e.status) for e in change.entries] == [
        (("udp", 53, 11), SAME), (("tcp", 80, 9), SAME), (("tcp", 443, 0), NEW),
        (("udp", 53, 20), GONE), (("tcp", 22, 1), GONE)]
    assert change.entries[1].before == ("tcp", 80, 5)
    assert shape.counters == (2,)
    assert column_rates(change.entries[1:3], 2, change.seconds) == [2.0, None]


def test_rates() -> None:
    assert rate(100, 350, 2.5) == 100.0
    assert rate(350, 100, 1.0) is None  # reset
    assert rate(None, 5, 1.0) is None
    assert rate(1, 5, None) is None
    assert rate(True, False, 1.0) is None


def test_unhashable_key_values_and_whole_row_identity() -> None:
    shape = Shape.of(["owners", "n"], ["INTEGER[]", "BIGINT"])
    change = compare(shape, [([1, 2], 3)], [([1, 2], 4), ([5], 1)])
    assert [e.status for e in change.entries] == [SAME, NEW]
    # Only measures: by position on screen, by the whole row for --changes.
    only = ["count_star()"], ["BIGINT"]
    assert [e.status for e in compare(Shape.of(*only), [(1,)], [(2,)]).entries] == [SAME]
    assert [e.status for e in compare(Shape.of(*only, whole_row=True), [(1,)],
                                      [(2,)]).entries] == [NEW, GONE]


def test_differ_on_real_sockets(srv: socket.socket) -> None:
    """Connections opened and closed between two runs of the same statement."""
    port = srv.getsockname()[1]
    engine = Engine()
    sql = ("SELECT local_port, remote_port, state, tx_queue FROM sockets "
           f"WHERE (local_port = {port} OR remote_port = {port}) AND state = 'ESTABLISHED'")
    keep = connect(srv)
    gone = connect(srv)

    def snapshot(differ: Differ) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
        result = engine.execute(sql)
        assert result.data is not None
        ch = differ.update(result.data.columns, result.data.types, result.data.rows,
                           time.monotonic())
        return ({(r[0], r[1]) for r in ch.added}, {(r[0], r[1]) for r in ch.removed})

    differ = Differ(whole_row=True)
    added, removed = snapshot(differ)
    ports = {(c.getsockname()[1], port) for c, _ in (keep, gone)} | {
        (port, c.getsockname()[1]) for c, _ in (keep, gone)}
    assert added == ports and removed == set()
    closed = gone[0].getsockname()[1]
    for s in gone:
        s.close()
    new = connect(srv)
    added, removed = snapshot(differ)
    eph = new[0].getsockname()[1]
    assert added == {(eph, port), (port, eph)}
    assert removed == {(closed, port), (port, closed)}
    assert snapshot(differ) == (set(), set())  # nothing changed: nothing to report
    for s in (*keep, *new):
        s.close()


@pytest.mark.skipif("flows" not in {t.name for t in default_tables()},
                    reason="no flows table")
def test_delta_of_a_real_byte_counter(srv: socket.socket) -> None:
    """bytes_sent of a connection grows by what the test sends: its rate is that growth
    over the time between two refreshes, and the row stays the same row."""
    c, s = connect(srv)
    eph = c.getsockname()[1]
    # (both ports: on a busy host another connection may have the same local port)
    watch = Watch(Engine(), [("sql", "SELECT local_port, remote_port, bytes_sent, rtt FROM "
                              f"flows WHERE local_port = {eph} AND remote_port = "
                              f"{srv.getsockname()[1]}", None)])
    differ = Differ()

    def refresh() -> tuple[float, list[tuple[Any, ...]], Change]:
        r = watch.refresh()
        data = r.snapshots[0].data
        return r.at, list(data.rows), differ.update(data.columns, data.types, data.rows,
                                                    r.at)

    at1, rows1, _ = refresh()
    c.sendall(b"x" * 100_000)
    got = 0
    while got < 100_000:
        got += len(s.recv(65536))
    time.sleep(0.2)
    at2, rows2, change = refresh()
    assert len(rows1) == len(rows2) == 1
    (entry,) = change.entries
    assert entry.status == SAME
    assert rows2[0][2] - rows1[0][2] >= 100_000
    assert change.shape.counters == (2,)
    assert column_rates([entry], 2, change.seconds) == [(rows2[0][2] - rows1[0][2]) / (at2 - at1)]
    c.close()
    s.close()


_ROWS = st.lists(st.tuples(st.sampled_from(["a", "b", None]),
                           st.one_of(st.none(), st.lists(st.integers(0, 2), max_size=2))),
                 max_size=8)


@settings(max_examples=800, deadline=None)
@given(st.lists(_ROWS, min_size=1, max_size=4))
def test_set_difference_path_matches_update(refreshes: list[list[tuple[Any, ...]]]) -> None:
    """Differ.changes (set difference when no row repeats) gives what Differ.update's
    matching gives, refresh after refresh: repeats, LIST values, empty results."""
    columns, types = ["x", "y"], ["VARCHAR", "INTEGER[]"]
    fast, slow = Differ(whole_row=True), Differ(whole_row=True)
    for i, rows in enumerate(refreshes):
        change = slow.update(columns, types, rows, float(i))
        assert fast.changes(columns, types, rows, float(i)) == (change.added, change.removed)
