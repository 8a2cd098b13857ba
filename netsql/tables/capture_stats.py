"""capture_stats: what each DNS capture source saw, dropped and evicted."""

from __future__ import annotations

from typing import Any

from netsql.collect import Collection, Need
from netsql.errors import NetsqlError
from netsql.schema import Column, Columns, Table

FIELDS = ("source", "net_namespace", "running", "interfaces", "started", "packets",
          "messages", "queries", "responses", "duplicates", "forgotten", "malformed",
          "kernel_drops",
          "evicted", "buffered",
          "capacity", "unattributed", "by_socket", "by_held", "by_inferred", "held",
          "hold_passed", "hold_paused", "hold_error", "process_events_error", "error")


def collect(coll: Collection, need: Need) -> Columns:
    rows: list[dict[str, Any]] = []
    pcap = coll.state.pcap
    if pcap is not None:
        from netsql.capture.pcapfile import CaptureFileError

        try:
            rows += pcap.status()
        except CaptureFileError as exc:
            raise NetsqlError(str(exc)) from None
    capture = coll.state.capture
    if capture is not None:
        rows += capture.status_rows()
    return {f: [r.get(f) for r in rows] for f in FIELDS}


TABLE = Table(
    name="capture_stats",
    description="Counters of each DNS capture source: packets and messages seen, what the "
    "kernel dropped and what the bounded buffer evicted; live, one row per network "
    "namespace.",
    columns=(
        Column("source", "VARCHAR", "'live' or a capture file's name"),
        Column("net_namespace", "BIGINT", "Live: the network namespace this row counts "
               "(one row per namespace captured, those that went away during the capture "
               "included); NULL for capture files"),
        Column("running", "BOOLEAN", "True while live capture runs in this namespace"),
        Column("interfaces", "VARCHAR[]", "Interfaces captured (['all'] for every one)"),
        Column("started", "TIMESTAMP", "When live capture started, or a file's first packet"),
        Column("packets", "BIGINT", "Packets read (live: those the kernel filter passed)"),
        Column("messages", "BIGINT", "DNS messages decoded"),
        Column("queries", "BIGINT", "Queries among them"),
        Column("responses", "BIGINT", "Responses among them"),
        Column("duplicates", "BIGINT", "Messages folded into a transaction already seen: the "
               "same packet on a second interface, a retransmitted query, a repeated response "
               "(docs/dns.md, Matching)"),
        Column("forgotten", "BIGINT", "Live: transactions forgotten while still in their "
               "window, for room (each namespace keeps the 65,536 opened last); a response "
               "to one comes as a response_only row (docs/dns.md, Matching)"),
        Column("malformed", "BIGINT", "Payloads on a DNS port that did not decode as DNS"),
        Column("kernel_drops", "BIGINT", "Packets the kernel dropped before netsql read "
               "them (receive buffer full)"),
        Column("evicted", "BIGINT", "Records pushed out of the bounded buffer, oldest first"),
        Column("buffered", "BIGINT", "Records held now (rows of dns_queries)"),
        Column("capacity", "BIGINT", "Most records held at once (one buffer shared by "
               "every namespace)"),
        Column("unattributed", "BIGINT", "Live queries whose process could not be found"),
        Column("by_socket", "BIGINT", "Live queries named by their socket "
               "(attribution = 'socket')"),
        Column("by_held", "BIGINT", "Live queries named while --hold held them "
               "(attribution = 'held')"),
        Column("by_inferred", "BIGINT", "Live queries named from the process exits after "
               "them (attribution = 'inferred')"),
        Column("held", "BIGINT", "With --hold: queries held until their sender was known "
               "(counted over every capture window so far; see docs/dns.md)"),
        Column("hold_passed", "BIGINT", "With --hold: queries let through unheld during "
               "flood pauses"),
        Column("hold_paused", "DOUBLE", "With --hold: seconds the hold was paused by floods"),
        Column("hold_error", "VARCHAR", "Why --hold could not hold queries, or stopped"),
        Column("process_events_error", "VARCHAR", "Why the kernel's process events are not "
               "read (then no 'inferred' attribution, and candidates are every process)"),
        Column("error", "VARCHAR", "Why live capture could not start (in this "
               "namespace), if it could not"),
    ),
    collect=collect,
    examples=(
        "SELECT source, running, messages, kernel_drops, evicted FROM capture_stats",
        "SELECT c.net_namespace, n.name, c.queries, c.unattributed FROM capture_stats c "
        "JOIN net_namespaces n USING (net_namespace)",
    ),
    notes="Empty when no capture source was set up (no --capture, --pcap or shell).",
)
