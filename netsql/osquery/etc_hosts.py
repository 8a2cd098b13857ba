"""osquery.etc_hosts: the lines of /etc/hosts ($NETSQL_ETC_HOSTS names another file)."""

from __future__ import annotations

import os

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

ENV = "NETSQL_ETC_HOSTS"


def path() -> str:
    return os.environ.get(ENV) or "/etc/hosts"


def parse(text: str) -> list[tuple[str, str | None]]:
    """(address, hostnames joined by one space) per entry; comments left out."""
    out: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        names: list[str] = []
        for w in words[1:]:
            if w.startswith("#"):
                break
            names.append(w)
        out.append((words[0], " ".join(names) if names else None))
    return out


def collect(coll: Collection, need: Need) -> Columns:
    where = path()
    text = procfs.read_text(where)
    if text is None:
        coll.warn(f"etc_hosts: cannot read {where}")
        text = ""
    rows = parse(text)
    return {"address": [a for a, _ in rows], "hostnames": [h for _, h in rows],
            "pid_with_namespace": [0] * len(rows)}


TABLE = table(
    "etc_hosts",
    "Line-parsed /etc/hosts (osquery's etc_hosts).",
    [
        col("address", "TEXT", "IP address mapping"),
        col("hostnames", "TEXT", "Raw hosts mapping: the names, space separated"),
        col("pid_with_namespace", "INTEGER", "osquery reads a container's file with it; "
            "here always 0 (hidden)", hidden=True),
    ],
    collect,
    examples=("SELECT address, hostnames FROM etc_hosts WHERE address NOT IN "
              "('127.0.0.1', '::1')",),
    notes="$NETSQL_ETC_HOSTS names another file to read (tests, a mounted image). "
    "In osquery mode osquery's alias `hosts` is a view of it.",
)
