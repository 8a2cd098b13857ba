"""dns_queries: DNS transactions seen live (with the asking process) or in capture files."""

from __future__ import annotations

from typing import Any

from netsql.collect import Collection, Need, milliseconds
from netsql.errors import NetsqlError
from netsql.schema import Column, Columns, Table

FIELDS = ("ts", "client_address", "client_port", "server_address", "server_port",
          "transport", "trans_id", "query", "qtype", "qclass", "rcode", "flags", "answers",
          "answer_types", "ttls", "rtt", "pid", "process", "uid", "forwarder", "interface",
          "source", "status", "net_namespace")


def live_capture(coll: Collection) -> Any:
    capture = coll.state.capture
    return capture if capture is not None and capture.ever_started else None


def dns_records(coll: Collection) -> list[Any]:
    """The records of the live capture (empty, with a warning, when none ran)."""
    capture = coll.state.capture
    if capture is None or not capture.ever_started:
        if capture is not None and capture.error:
            raise NetsqlError(capture.error)
        coll.warn("dns_queries is empty: no capture ran; use --capture SECONDS to capture "
                  "live first, or --pcap FILE to read a capture file")
        return []
    return list(capture.tracker.snapshot())


def collect(coll: Collection, need: Need) -> Columns:
    pcap = coll.state.pcap
    if pcap is not None:
        from netsql.capture.pcapfile import CaptureFileError

        try:
            cols: Columns = pcap.columns(need.columns)
        except CaptureFileError as exc:
            raise NetsqlError(str(exc)) from None
        return _only(_rtt_ms(cols), need)
    live = live_capture(coll)
    if live is None:
        dns_records(coll)  # the error or the warning
        return _only({"ts": []}, need)
    note = live.hold_warning()
    if note:
        coll.warn(note)
    cols, recs = live.tracker.columns(need.columns)
    cols = {k: v for k, v in cols.items() if k in FIELDS and (k == "ts" or need.wants(k))}
    if need.wants("attribution"):
        how = live.attribution_of
        cols["attribution"] = ([None] * len(cols["ts"]) if recs is None else
                               [how(r) if r is not None else None for r in recs])
    return _only(_rtt_ms(cols), need)


def _rtt_ms(cols: Columns) -> Columns:
    """The capture layer measures rtt in seconds; the column is in milliseconds."""
    if cols.get("rtt") is not None:
        cols["rtt"] = milliseconds(cols["rtt"])
    return cols


def _only(cols: Columns, need: Need) -> Columns:
    """Only the columns the statement reads (the rest load as NULL), rows of ``pids``."""
    if need.columns is not None:
        keep_cols = need.columns | {"ts"}
        cols = {k: v for k, v in cols.items() if k in keep_cols or k == "pid"}
    return need.keep_pids(cols, len(cols.get("ts", [])))


TABLE = Table(
    name="dns_queries",
    description="DNS transactions (a query matched with its response) captured live, with "
    "the process that asked, or read from capture files (--pcap).",
    columns=(
        Column("ts", "TIMESTAMP", "When the query was seen (UTC); for a response without a "
               "seen query, when the response was seen"),
        Column("client_address", "VARCHAR", "Address that sent the query"),
        Column("client_port", "INTEGER", "Port that sent the query"),
        Column("server_address", "VARCHAR", "Address the query went to (the resolver)"),
        Column("server_port", "INTEGER", "Server port (53 unless --dns-port)"),
        Column("transport", "VARCHAR", "'udp' or 'tcp'"),
        Column("trans_id", "INTEGER", "DNS transaction id"),
        Column("query", "VARCHAR", "Name asked for: lower case, no trailing dot"),
        Column("qtype", "VARCHAR", "Query type: 'A', 'AAAA', 'CNAME', 'MX', 'TXT', 'PTR', "
               "... ('TYPE123' when unknown)"),
        Column("qclass", "VARCHAR", "Query class, almost always 'IN'"),
        Column("rcode", "VARCHAR", "'NOERROR', 'NXDOMAIN', 'SERVFAIL', 'REFUSED', ...; NULL "
               "while unanswered"),
        Column("flags", "VARCHAR[]", "Header flags set: of 'AA', 'TC', 'RD', 'RA' (the "
               "response's when answered)"),
        Column("answers", "VARCHAR[]", "Answer records' data: addresses for A/AAAA, target "
               "names for CNAME/PTR/NS, ... (join on list_contains(answers, address) and "
               "net_namespace); "
               "NULL while unanswered"),
        Column("answer_types", "VARCHAR[]", "Type of each answer, in the order of answers"),
        Column("ttls", "INTEGER[]", "TTL in seconds of each answer, in the order of answers"),
        Column("rtt", "DOUBLE", "Milliseconds from the first copy of the query to the "
               "response, to the microsecond (0 when the response was captured first); "
               "NULL when unmatched"),
        Column("pid", "INTEGER", "Process that sent the query (live capture only; NULL when "
               "it could not be found, e.g. the query came from another host)"),
        Column("process", "VARCHAR", "Name of that process when the query was seen (kept "
               "after it exits)"),
        Column("uid", "INTEGER", "User id owning the sending socket"),
        Column("attribution", "VARCHAR", "How pid was found: 'socket' (the sending socket "
               "was seen held by pid), 'held' (found while --hold held the query), "
               "'inferred' (the socket was gone; pid was the one process that could have "
               "sent it and exited right after its answer); NULL: not found "
               "(docs/dns.md says what each can be trusted for)"),
        Column("forwarder", "BOOLEAN", "True when the sending process itself serves DNS (a "
               "stub resolver or forwarder making its upstream query, not an application)"),
        Column("interface", "VARCHAR", "Interface the query was seen on (live), or the "
               "capture file's interface name when it records one"),
        Column("source", "VARCHAR", "'live', or the capture file's name"),
        Column("net_namespace", "BIGINT", "Inode of the network namespace the packet was "
               "seen in (as sockets.net_namespace; join DNS to sockets on it and the "
               "address); NULL for rows read from capture files"),
        Column("status", "VARCHAR", "'answered', 'unanswered' (no response seen yet), or "
               "'response_only' (a response whose query was not seen); copies of a message "
               "(seen on two interfaces, retransmitted) fold into one row (docs/dns.md)"),
    ),
    collect=collect,
    examples=(
        "SELECT pid, process, query, qtype, rcode, answers FROM dns_queries "
        "WHERE query = 'vmp.boldchat.com'",
        "SELECT query, count(*) AS n FROM dns_queries GROUP BY query ORDER BY n DESC LIMIT 10",
        "SELECT p.pid, p.name, s.net_namespace, s.remote_address, s.remote_port, d.query "
        "FROM dns_queries d JOIN sockets s ON list_contains(d.answers, s.remote_address) "
        "AND coalesce(d.net_namespace = s.net_namespace, true) "
        "JOIN processes p ON p.pid = s.pid",
        "SELECT process, count(*) AS nxdomain FROM dns_queries WHERE rcode = 'NXDOMAIN' "
        "GROUP BY process ORDER BY nxdomain DESC",
    ),
    notes="Live capture (root or CAP_NET_RAW) reads every interface, loopback included, "
    "of every network namespace (or those of --netns; net_namespace says which), "
    "through AF_PACKET sockets whose BPF filter passes only DNS ports; the asking "
    "process is looked up the moment its query is seen, in that namespace. --capture "
    "SECONDS captures before a one-liner runs; the shell captures from its start. With "
    "--pcap FILE the table reads capture files instead (no pid). The buffer keeps the "
    "newest records (--dns-buffer), counting what it evicts (see capture_stats). docs/dns.md says "
    "what attribution can and cannot show. Live capture is Linux only; capture files "
    "are read on every platform.",
)
