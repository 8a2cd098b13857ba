"""How live attribution (attrib.py) named each DNS query: the method that named a
record, kept for the last ``keep`` records (``dns_queries.attribution``), and the
counts by method and by network namespace (capture_stats).
"""

from __future__ import annotations

from collections import OrderedDict

from netsql.capture.tracker import DnsRecord

METHODS = ("socket", "held", "inferred")
COUNTS = (*METHODS, "missed", "skipped")


class Tally:
    """One Attributor's: ``named`` is called under its lock."""

    def __init__(self, keep: int) -> None:
        self.methods: OrderedDict[int, tuple[DnsRecord, str]] = OrderedDict()
        self.keep = keep
        self.counts = dict.fromkeys(METHODS, 0)
        self.by_netns: dict[int | None, dict[str, int]] = {}  # COUNTS per namespace
        self.skipped = 0  # queue full: left unattributed
        self.missed = 0  # no way found to name the sender
        self.ambiguous = 0  # of those: several processes could have sent it

    def named(self, rec: DnsRecord, method: str) -> None:
        self.methods[id(rec)] = (rec, method)
        while len(self.methods) > self.keep:
            self.methods.popitem(last=False)
        self.counts[method] += 1
        self.count(rec.net_namespace, method)

    def method_of(self, rec: DnsRecord) -> str | None:
        hit = self.methods.get(id(rec))
        return hit[1] if hit is not None and hit[0] is rec else None

    def count(self, ns: int | None, what: str) -> None:
        counts = self.by_netns.get(ns)
        if counts is None:
            counts = self.by_netns[ns] = dict.fromkeys(COUNTS, 0)
        counts[what] += 1

    def miss(self, rec: DnsRecord) -> None:
        self.missed += 1
        self.count(rec.net_namespace, "missed")

    def skip(self, rec: DnsRecord) -> None:
        self.skipped += 1
        self.count(rec.net_namespace, "skipped")

    def counts_of(self, ns: int | None) -> dict[str, int]:
        """COUNTS of namespace ``ns``'s queries."""
        return dict(self.by_netns.get(ns) or dict.fromkeys(COUNTS, 0))
