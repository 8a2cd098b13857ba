"""The sockets table's split TCP dump (backends/linux_sockets.py, SPLIT_FROM): a busy
namespace's TCP sockets dumped in two halves at once, by local port, hold every socket
once, with the same columns as one dump; the cut follows the ports seen."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from netsql import procfs
from netsql.backends import linux_sockets
from netsql.collect import Collection
from tests.test_sockdiag import listeners


def _ours(cols: dict[str, list[Any]], inodes: set[int]) -> list[tuple[Any, ...]]:
    """Our sockets' rows, in inode order."""
    names = list(cols)
    return sorted((tuple(cols[k][i] for k in names) for i in range(len(cols["inode"]))
                   if cols["inode"][i] in inodes), key=lambda row: row[names.index("inode")])


def test_split_dump_holds_each_socket_once(monkeypatch: pytest.MonkeyPatch) -> None:
    socks = listeners(10)
    peers = []
    try:
        for s in socks[:4]:  # connected pairs too (both ends on this host)
            c = socket.create_connection(s.getsockname()[:2])
            a, _ = s.accept()
            peers += [c, a]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        peers.append(u)
        everything = socks + peers
        inodes = {os.fstat(s.fileno()).st_ino for s in everything}
        ports = sorted(s.getsockname()[1] for s in everything if s.type == socket.SOCK_STREAM)
        here = procfs.own_netns()
        monkeypatch.setattr(linux_sockets, "SPLIT_FROM", 10**9)
        monkeypatch.setattr(linux_sockets, "_CUTS", {})
        monkeypatch.setattr(linux_sockets, "_PACES", {})
        whole = linux_sockets.read_sockets(Collection())
        assert linux_sockets._CUTS == {}  # (few sockets: no cut learned)
        monkeypatch.setattr(linux_sockets, "SPLIT_FROM", 1)  # (then kept, and its Pace)
        for flows in (False, True):
            # A cut, not yet timed: the next dump is in halves.
            monkeypatch.setitem(linux_sockets._CUTS, here, ports[len(ports) // 2])
            monkeypatch.setattr(linux_sockets, "_PACES", {})
            coll = Collection()
            if flows:  # one TCP dump serves flows too: its records split alike
                coll.tables = frozenset({"sockets", "flows"})
            split = linux_sockets.read_sockets(coll)
            mine = _ours(split, inodes)
            assert [r[10] for r in mine] == sorted(inodes)  # each once
            assert mine == _ours(whole, inodes)
            if flows:
                records = coll.once("tcp_info", dict)[here]
                assert sorted(r[9] for r in records if r[9] in inodes) == sorted(
                    os.fstat(s.fileno()).st_ino for s in everything
                    if s.type == socket.SOCK_STREAM)
            assert list(linux_sockets._PACES[here].took) == [True]  # timed in halves
        # A cut is learned from the ports seen, when there are enough sockets to share;
        # none when there are not.
        assert 0 < linux_sockets._CUTS[here] <= 0xFFFF
        monkeypatch.setattr(linux_sockets, "SPLIT_FROM", 10**9)
        linux_sockets.read_sockets(Collection())
        assert here not in linux_sockets._CUTS and here not in linux_sockets._PACES
    finally:
        for s in socks + peers:
            s.close()


def test_learned_cut_is_the_median_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linux_sockets, "_CUTS", {})
    monkeypatch.setattr(linux_sockets, "SPLIT_FROM", 640)
    linux_sockets._learn_cut(7, [5, 1, 9, 3, 7, 2, 8, 4, 6, 10])  # every 64th of 640
    assert linux_sockets._CUTS == {7: 6}
    linux_sockets._learn_cut(7, [5] * 9)  # fewer sockets now: one dump again
    assert linux_sockets._CUTS == {}


def test_pace_takes_the_faster_way_and_tries_the_other_again() -> None:
    pace = linux_sockets.Pace()
    assert pace.halves()  # each way timed once first
    pace.took[True] = 0.050
    assert not pace.halves()
    pace.took[False] = 0.040  # whole was faster: whole, but halves every RETRY-th dump
    ways = [pace.halves() for _ in range(3 * pace.RETRY)]
    assert ways.count(True) == 3 and all(ways[i] == ((i + 3) % pace.RETRY == 0)
                                         for i in range(len(ways)))
    pace.took[True] = 0.030  # halves timed faster on that retry: halves from now on
    ways = [pace.halves() for _ in range(2 * pace.RETRY)]
    assert ways.count(False) == 2
