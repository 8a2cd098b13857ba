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

Forgetting a transaction older than ``WINDOW`` changes nothing above. Live capture keeps
at most ``limit`` open transactions a namespace: each opening forgets the transaction
opened ``limit`` openings before it, if that one is still its key's (counted in
``forgotten`` when its window had not passed); a capture file's scan keeps them all.
Forgetting at the opening, not in a pass over the table, costs each message the same
however full the table is, and the compiled store (_cscan_store.c, ``ltab_open``)
forgets exactly the same ones: a ring of its places.
"""

from __future__ import annotations

from typing import Any

#: Seconds a query waits for its response (and its copies and retransmissions fold into
#: it); seconds a response's copies are recognised as duplicates.
WINDOW = 10.0

NEW, DUPLICATE, ANSWERS, JOINED = 0, 1, 2, 3

Key = tuple[Any, ...]
# [query ts, response ts, row, complete]; a list so that _cscan.c can share it.
Entry = list[Any]


class Pairing:
    """The state of the rule: one entry per key (see the module's docstring); at most
    ``limit`` open transactions (None: all)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.table: dict[Key, Entry] = {}
        self.duplicates = 0  # copies and retransmissions folded into a transaction
        self.forgotten = 0  # transactions dropped for room while still in their window
        #: The last ``limit`` openings, (key, entry), in a ring (filled as they come:
        #: the compiled store keeps its own, so this one mostly stays empty); _at: the
        #: next place once it is full.
        self._ring: list[tuple[Key, Entry]] = []
        self._at = 0

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
        table[key] = entry
        if self.limit is None:
            return
        ring, at = self._ring, self._at
        if len(ring) < self.limit:
            ring.append((key, entry))
            return
        old = ring[at]
        if table.get(old[0]) is old[1]:  # still its key's: forgotten
            del table[old[0]]
            if ts - _last(old[1]) < WINDOW:
                self.forgotten += 1
        ring[at] = (key, entry)
        self._at = at + 1 if at + 1 < self.limit else 0

    def forget_all(self) -> None:
        """Forget every open transaction (their namespace went away)."""
        self.table.clear()
        self._ring = []
        self._at = 0


def _last(e: Entry) -> float:
    """The time of an entry's newest message."""
    q, r = e[0], e[1]
    return r if q is None else q if r is None else max(q, r)
