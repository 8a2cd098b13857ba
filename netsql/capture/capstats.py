"""A live capture's counters: one row per network namespace (capture_stats), and their
sum (the shell's .capture and toolbar)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from netsql.capture.attribcounts import METHODS

#: Counters added up over namespaces for the whole capture's status.
SUMMED = ("packets", "messages", "queries", "responses", "duplicates", "forgotten",
          "malformed", "kernel_drops", "dropped", "evicted", "buffered", "unattributed",
          *(f"by_{m}" for m in METHODS), "held", "hold_passed", "hold_paused")


def empty_status(capture: Any) -> dict[str, Any]:
    """A row with no namespace's counters yet (all zero)."""
    return {
        "source": "live", "net_namespace": None, "running": False,
        "interfaces": capture.interfaces or ["all"], "ports": capture.ports,
        "started": capture.started, **dict.fromkeys(SUMMED, 0),
        "capacity": capture.tracker.capacity, "hold_error": None,
        "process_events_error": capture.procs_error, "error": capture.error,
    }


def ns_status(capture: Any, part: Any, buffered: Counter[int | None]) -> dict[str, Any]:
    """The counters of one namespace: ``part`` is an nsset.Part (captured now, or
    closed when its namespace went away) or an nsset.Failed (could not be opened);
    ``buffered``: tracker.DnsTracker.buffered_by_netns."""
    ns = part.netns
    row = empty_status(capture)
    row["net_namespace"] = ns
    live = getattr(part, "live", None)
    if live is None:  # nsset.Failed
        row["error"] = part.error
        return row
    packets, drops = live.stats()
    c = capture.tracker.counts(ns)
    attrib = capture.attrib
    counts = attrib.counts_of(ns) if attrib is not None else {}
    held = capture.hold_stats(ns)
    row.update({
        "running": live.running,
        "interfaces": part.interfaces or ["all"],
        "started": live.started,
        "packets": packets, "messages": c["messages"], "queries": c["queries"],
        "responses": c["responses"], "duplicates": c["duplicates"],
        "forgotten": c["forgotten"], "malformed": c["malformed"],
        "kernel_drops": drops, "dropped": drops, "evicted": c["evicted"],
        "buffered": buffered.get(ns, 0),
        "unattributed": counts.get("missed", 0) + counts.get("skipped", 0),
        **{f"by_{m}": counts.get(m, 0) for m in METHODS},
        "held": int(held.get("held", 0)),
        "hold_passed": int(held.get("passed", 0)),
        "hold_paused": round(held.get("paused_seconds", 0.0), 3),
        "hold_error": part.hold_error or (part.hold.error if part.hold else None),
        "error": None,
    })
    return row
