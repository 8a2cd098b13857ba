"""osquery.osquery_info: the running agent, answered for netsql."""

from __future__ import annotations

import os

from netsql import __version__, procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.osquery.system_info import machine_uuid
from netsql.schema import Columns

_INSTANCE = "osquery.instance_id"  # in State.caches: one id per engine (netsql serve: its own)
LINUX_PLATFORM_MASK = 0x1 | 0x8  # osquery's PlatformType: POSIX | LINUX


def _distro() -> str | None:
    fields: dict[str, str] = {}
    for line in (procfs.read_text("/etc/os-release") or "").splitlines():
        key, _, value = line.partition("=")
        fields[key] = value.strip().strip('"')
    return fields.get("VERSION_ID") or fields.get("ID")


def collect(coll: Collection, need: Need) -> Columns:
    import platform  # 20 ms to import (with uuid): only when the table is read
    import uuid

    instance = coll.state.caches.setdefault(_INSTANCE, str(uuid.uuid4()))
    st = procfs.stat_fields(os.getpid())
    start = int(procfs.boot_time() + int(st[1][19]) / procfs.CLK_TCK) if st else None
    row = {
        "pid": os.getpid(), "uuid": machine_uuid(), "instance_id": instance,
        "version": __version__, "config_hash": "", "config_valid": 0,
        "extensions": "inactive", "build_platform": platform.system().lower(),
        "build_distro": _distro(), "start_time": start, "watcher": -1,
        "platform_mask": LINUX_PLATFORM_MASK,
    }
    return {k: [v] for k, v in row.items()}


TABLE = table(
    "osquery_info",
    "Top level information about the running agent: here netsql itself (osquery's "
    "osquery_info, answered for netsql).",
    [
        col("pid", "INTEGER", "Process ID of netsql"),
        col("uuid", "TEXT", "Unique ID provided by the system (as system_info.uuid)"),
        col("instance_id", "TEXT", "Unique ID of this netsql engine (a shell, a watch)"),
        col("version", "TEXT", "netsql's version (not osquery's)"),
        col("config_hash", "TEXT", "Hash of the working configuration state: '' (no "
            "osquery config)"),
        col("config_valid", "INTEGER", "0: netsql has no osquery configuration"),
        col("extensions", "TEXT", "osquery extensions status: 'inactive'"),
        col("build_platform", "TEXT", "Build platform ('linux')"),
        col("build_distro", "TEXT", "Platform distribution version (/etc/os-release)"),
        col("start_time", "INTEGER", "UNIX time in seconds when netsql started"),
        col("watcher", "INTEGER", "Process ID of a watcher process: -1, none"),
        col("platform_mask", "INTEGER", "The osquery platform bitmask (9: POSIX | LINUX)"),
    ],
    collect,
    examples=("SELECT pid, version, start_time FROM osquery_info",),
)
