"""osquery.groups: local groups, from /etc/group."""

from __future__ import annotations

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.osquery.users import signed32
from netsql.schema import Columns

GROUP = "/etc/group"


def collect(coll: Collection, need: Need) -> Columns:
    cols: Columns = {"gid": [], "gid_signed": [], "groupname": [], "pid_with_namespace": []}
    for line in (procfs.read_text(GROUP) or "").splitlines():
        f = line.split(":")
        if len(f) < 3 or not f[2].isdigit():
            continue
        gid = int(f[2])
        cols["gid"].append(gid)
        cols["gid_signed"].append(signed32(gid))
        cols["groupname"].append(f[0])
        cols["pid_with_namespace"].append(0)
    return cols


TABLE = table(
    "groups",
    "Local system groups (osquery's groups), from /etc/group.",
    [
        col("gid", "BIGINT", "Unsigned int64 group ID"),
        col("gid_signed", "BIGINT", "A signed int64 version of gid"),
        col("groupname", "TEXT", "Canonical local group name"),
        col("pid_with_namespace", "INTEGER", "osquery reads a container's file with it; "
            "here always 0 (hidden)", hidden=True),
    ],
    collect,
    examples=("SELECT gid, groupname FROM groups ORDER BY gid",),
    notes="GROUPS is an SQL keyword in DuckDB: write osquery.groups or \"groups\".",
)
