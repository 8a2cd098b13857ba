"""The one rule for pairing DNS queries with responses (docs/dns.md, "Matching").

Every path that builds dns_queries rows asks this module what a message means: the live
tracker (tracker.py), the pure-Python pcap scan (fastscan.py) and, mirrored line for
line, the compiled scanner (_cscan.c: ``verdict_query``/``verdict_response``, which
every C table asks: scan_pcap's, scan_pcap_threads' and the live store's).
tests/test_dns_policy.py feeds the same packet sequences through all three.

A transaction is known by its key ``(transport, client address, client port, server
address, server port, DNS id)`` (live, the network namespace too: two namespaces may
use the same addresses). ``table`` maps a key to the newest transaction with it:
``[query ts | None, response ts | None, row, complete]`` (``complete``: a response came
after the query, so the next query with this key is a new transaction).

A query:
  - the key's transaction has a response but no query yet, and that response is less
    than ``WINDOW`` old: this is its query (the response was captured first). JOINED:
    the row becomes answered (rtt 0, the row keeps the response's time and header);
  - the key's transaction has a query less than ``WINDOW`` old and is not complete:
    the same query captured again (another interface) or retransmitted. DUPLICATE;
  - otherwise a new transaction (NEW; the caller makes the row and calls ``opened``):
    the key's old transaction, if any, keeps its row (an ID reused after an answer, or
    after ``WINDOW``).
A response:
  - the key's transaction has a query less than ``WINDOW`` old and no response: ANSWERS
    it (rtt from the first copy of the query);
  - the key's transaction has a response less than ``WINDOW`` old: DUPLICATE (the same
    response captured again, or the answer to a retransmission); the first one stands;
  - otherwise NEW: a ``response_only`` row (no query seen, or only one older than
    ``WINDOW``: a query whose response never came stays ``unanswered``).

Forgetting a transaction older than ``WINDOW`` changes nothing above, so the live
tracker drops those (``expire``) and keeps at most ``max_open`` (the oldest forgotten
first, counted in ``forgotten``); a capture file's scan keeps them all.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice
from typing import Any

#: Seconds a query waits for its response (and its copies and retransmissions fold into
#: it); seconds a response's copies are recognised as duplicates.
WINDOW = 10.0

NEW, DUPLICATE, ANSWERS, JOINED = 0, 1, 2, 3

Key = tuple[Any, ...]
# [query ts, response ts, row, complete]; a list so that _cscan.c can share it.
Entry = list[Any]


class Pairing:
    """The state of the rule: one entry per key (see the module's docstring)."""

    def __init__(self, max_open: int | None = None) -> None:
        self.max_open = max_open
        self.table: dict[Key, Entry] = OrderedDict() if max_open is not None else {}
        self.duplicates = 0  # copies and retransmissions folded into a transaction
        self.forgotten = 0  # transactions dropped for room while still in their window
        self._expired = float("-inf")  # capture time of the last expire()

    def query(self, key: Key, ts: float) -> tuple[int, Any]:
        """(verdict, the row it concerns or None) for a query with ``key`` at ``ts``."""
        e = self.table.get(key)
        if e is not None:
            if e[0] is None:
                if ts - e[1] < WINDOW:
                    e[0] = ts
                    return JOINED, e[2]
            elif not e[3] and ts - e[0] < WINDOW:
                self.duplicates += 1
                return DUPLICATE, e[2]
        return NEW, None

    def response(self, key: Key, ts: float) -> tuple[int, Any]:
        """(verdict, the row it concerns or None) for a response with ``key`` at ``ts``."""
        e = self.table.get(key)
        if e is not None:
            if e[1] is None:
                if ts - e[0] < WINDOW:
                    e[1] = ts
                    e[3] = True
                    return ANSWERS, e[2]
            elif ts - e[1] < WINDOW:
                self.duplicates += 1
                return DUPLICATE, e[2]
        return NEW, None

    def opened(self, key: Key, ts: float, row: Any, is_query: bool) -> None:
        """A NEW verdict's row: it is now the key's transaction."""
        table = self.table
        entry = [ts, None, row, False] if is_query else [None, ts, row, False]
        if self.max_open is None:
            table[key] = entry
            return
        table.pop(key, None)  # to the end: the table stays in order of opening
        table[key] = entry
        if len(table) > self.max_open:
            assert isinstance(table, OrderedDict)
            table.popitem(last=False)
            self.forgotten += 1

    def expire(self, now: float) -> None:
        """Forget transactions nothing can match any more (older than ``WINDOW``); at
        most once a second of capture time (a cost per message otherwise)."""
        if now - self._expired < 1.0:
            return
        self._expired = now
        table = self.table
        assert isinstance(table, OrderedDict)
        while table:
            e = next(iter(table.values()))
            last = e[1] if e[0] is None else e[0] if e[1] is None else max(e[0], e[1])
            if now - last < WINDOW:
                return
            table.popitem(last=False)

    def trim(self, now: float, limit: int) -> None:
        """The live scan's bound (livescan.py), for a table that is a plain dict (the
        compiled decoder shares it: an OrderedDict it could not keep in order). The
        dict is in order of opening: at most once a second of capture time, the
        transactions at its front older than ``WINDOW`` are forgotten; past ``limit``
        open ones, the oldest half too (counted in ``forgotten``). Each pass deletes
        what it forgets and looks at nothing else, so under a flood a message costs
        the same however full the table is."""
        table = self.table
        over = len(table) > limit
        if not over and now - self._expired < 1.0:
            return
        self._expired = now
        old = 0
        for e in table.values():
            if now - _last(e) < WINDOW:
                break
            old += 1
        if over:
            keep = max(limit // 2, 1)
            if len(table) - old > keep:
                self.forgotten += len(table) - old - keep
                old = len(table) - keep
        for k in list(islice(table, old)):
            del table[k]


def _last(e: Entry) -> float:
    """The time of an entry's newest message."""
    q, r = e[0], e[1]
    return r if q is None else q if r is None else max(q, r)
