"""The recorder's DNS feed (netsql/history/dnsfeed.py) over a real tracker, compiled
store and pure-Python alike: each record is taken once, answered ones at once,
unanswered ones after they settle, and every one when the recording ends."""

from __future__ import annotations

import time

import pytest

from netsql.capture import livescan
from netsql.capture.livescan import LiveDecoder
from netsql.capture.tracker import DnsTracker
from netsql.history.dnsfeed import DnsFeed
from tests.dnsutil import udp_ip
from tests.test_fastscan import answer, query

CLIENT, SERVER = "10.0.0.1", "10.0.0.53"


def ask(dec: LiveDecoder, tid: int, answered: bool) -> None:
    now = time.time()
    name = f"q{tid}.example.test"
    dec.packet(now, udp_ip(CLIENT, SERVER, 40000 + tid, 53, query(tid, name)), "eth0", True)
    if answered:
        dec.packet(now, udp_ip(SERVER, CLIENT, 53, 40000 + tid, answer(tid, name)), "eth0",
                   False)


def fed(compiled: bool, capacity: int) -> tuple[LiveDecoder, DnsFeed]:
    """A decoder into a real tracker of ``capacity`` records, and a feed over it."""
    if compiled and not livescan.COMPILED:
        pytest.skip("the compiled store is not built")
    tracker = DnsTracker(capacity=capacity, ports=(53,), compiled=compiled)
    return LiveDecoder(tracker), DnsFeed(tracker, settle=3600.0)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_each_record_once_and_every_one_at_the_end(compiled: bool) -> None:
    dec, feed = fed(compiled, 1000)
    for tid in range(1, 11):
        ask(dec, tid, answered=tid % 2 == 0)
    first = feed()
    assert sorted(r.trans_id for r in first) == [2, 4, 6, 8, 10]  # answered: at once
    assert feed() == []  # nothing twice
    for tid in range(11, 14):
        ask(dec, tid, answered=True)
    assert sorted(r.trans_id for r in feed()) == [11, 12, 13]
    # The recording ends: the unanswered ones go too, once, without their settle time.
    assert sorted(r.trans_id for r in feed(final=True)) == [1, 3, 5, 7, 9]
    assert feed(final=True) == []


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_a_feed_behind_a_small_buffer_takes_what_it_would_lose(compiled: bool) -> None:
    dec, feed = fed(compiled, 10)
    for tid in range(1, 9):
        ask(dec, tid, answered=False)
    # The oldest half of a buffer more than half full is taken as it stands.
    taken = [r.trans_id for r in feed()]
    assert taken == [1, 2, 3]
    assert [r.trans_id for r in feed(final=True)] == [4, 5, 6, 7, 8]
