"""The recorder's DNS rows: the transactions a live capture finished."""

from __future__ import annotations

import time
from typing import Any

from netsql.history.tables import DNS_QUERIES


def dns_row(rec: Any) -> dict[str, Any]:
    """A recorded dns_queries row from a tracker record."""
    row = {name: getattr(rec, name, None) for name in DNS_QUERIES.column_names}
    rtt = getattr(rec, "rtt", None)
    row["rtt_ms"] = None if rtt is None else rtt * 1000.0
    return row


class DnsFeed:
    """The DNS transactions a capture's tracker finished since the last call: answered
    ones at once, unanswered ones once ``settle`` seconds passed without a response.
    Each record has a sequence number in the tracker's buffer: a call asks only for the
    records from the oldest one not yet decided, so it costs what arrived since, not
    the whole buffer (100,000 records made each second cost a fifth of a core)."""

    def __init__(self, tracker: Any, settle: float = 5.0) -> None:
        self.tracker = tracker
        self.settle = settle
        self.next = 0  # records before this one were all taken (or evicted)
        self.taken: set[int] = set()  # taken records from ``next`` on

    def __call__(self, final: bool = False) -> list[Any]:
        """The records decided since the last call; ``final``: all the rest too."""
        now = float("inf") if final else time.time()
        first, records = self.tracker.since(self.next)
        tail = first + len(records)
        # Under a flood the buffer may evict a record before its settle time: the
        # oldest half of a buffer more than half full is taken as it stands.
        capacity = getattr(self.tracker, "capacity", 0) or len(records) * 2
        safe_from = tail - capacity // 2
        out = []
        undecided = tail
        for seq, rec in enumerate(records, first):
            if seq in self.taken:
                continue
            if rec.status == "unanswered" and now - rec.ts < self.settle and \
                    seq >= safe_from:
                undecided = min(undecided, seq)
                continue
            self.taken.add(seq)
            out.append(rec)
        self.next = undecided
        self.taken = {s for s in self.taken if s >= undecided}
        return out
