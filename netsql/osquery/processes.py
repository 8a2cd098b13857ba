"""osquery.processes: osquery's processes table (specs/processes.table, Linux columns).

As in osquery, text that cannot be read is '' (osquery sets every column it knows),
numbers that cannot be read are NULL.

Read from /proc like netsql's processes (procfs.stat_fields), only the files the
statement's columns need; ``WHERE pid = N`` reads that one process.
"""

from __future__ import annotations

import os
from typing import Any

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

_DELETED = " (deleted)"
#: Columns of other platforms: hidden, NULL (as osquery leaves them empty on Linux).
OTHER_PLATFORMS = (
    ("elevated_token", "INTEGER"), ("secure_process", "INTEGER"),
    ("protection_type", "TEXT"), ("virtual_process", "INTEGER"),
    ("elapsed_time", "BIGINT"), ("handle_count", "BIGINT"),
    ("percent_processor_time", "BIGINT"), ("upid", "BIGINT"), ("uppid", "BIGINT"),
    ("cpu_type", "INTEGER"), ("cpu_subtype", "INTEGER"), ("translated", "INTEGER"),
)


def _status(pid: int) -> dict[str, str]:
    raw = procfs.read_bytes(f"/proc/{pid}/status")
    out: dict[str, str] = {}
    for line in (raw or b"").decode("utf-8", "surrogateescape").splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _kib(text: str | None) -> int | None:
    return int(text.split()[0]) * 1024 if text else None


def _io(pid: int) -> tuple[int | None, int | None]:
    raw = procfs.read_bytes(f"/proc/{pid}/io")
    if raw is None:
        return None, None  # root only for other users' processes, as in osquery
    f = dict(line.split(": ", 1) for line in raw.decode().splitlines() if ": " in line)
    read = int(f.get("read_bytes", 0))
    return read, int(f.get("write_bytes", 0)) - int(f.get("cancelled_write_bytes", 0))


def cgroup_path(pid: int) -> str | None:
    """The first line of /proc/PID/cgroup after its second colon ('/user.slice/...')."""
    raw = procfs.read_bytes(f"/proc/{pid}/cgroup")
    if raw is None:
        return None
    first = raw.decode("utf-8", "surrogateescape").split("\n", 1)[0]
    parts = first.split(":", 2)
    return parts[2] if len(parts) == 3 else None


def on_disk(path: str | None) -> tuple[str | None, int]:
    """(path without ' (deleted)', 1 / 0 / -1): osquery's tristate."""
    if not path:
        return None, -1
    if path.endswith(_DELETED) and not os.path.exists(path):
        return path[: -len(_DELETED)], 0
    return path, 1 if os.path.exists(path) else 0


def collect(coll: Collection, need: Need) -> Columns:
    pids = sorted(need.pids) if need.pids is not None else procfs.pids_of(coll)
    wants = need.wants
    w_status = wants("name", "uid", "gid", "euid", "egid", "suid", "sgid", "resident_size",
                     "total_size")
    w_path = wants("path", "on_disk")
    w_io = wants("disk_bytes_read", "disk_bytes_written")
    w_cmd, w_cg = wants("cmdline"), wants("cgroup_path")
    w_cwd, w_root = wants("cwd"), wants("root")
    boot = procfs.boot_time()
    ms_per_tick = 1000 / procfs.CLK_TCK
    rows: list[dict[str, Any]] = []
    readlink = procfs.read_link
    for pid in pids:
        st = procfs.stat_fields(pid)
        if st is None:
            continue
        _comm, f = st
        r: dict[str, Any] = {
            "pid": pid, "state": f[0], "parent": int(f[1]), "pgroup": int(f[2]),
            "user_time": int(int(f[11]) * ms_per_tick),
            "system_time": int(int(f[12]) * ms_per_tick),
            "nice": int(f[16]), "threads": int(f[17]),
            "start_time": int(boot + int(f[19]) / procfs.CLK_TCK) if boot else -1,
            "wired_size": 0,
        }
        if w_status:
            s = _status(pid)
            if not s:
                continue  # exited meanwhile
            r["name"] = s.get("Name")
            uids = [int(x) for x in s.get("Uid", "").split()[:3]]
            gids = [int(x) for x in s.get("Gid", "").split()[:3]]
            if len(uids) == 3:
                r["uid"], r["euid"], r["suid"] = uids
            if len(gids) == 3:
                r["gid"], r["egid"], r["sgid"] = gids
            r["resident_size"] = _kib(s.get("VmRSS"))
            r["total_size"] = _kib(s.get("VmSize"))
        if w_path:
            path, r["on_disk"] = on_disk(readlink(f"/proc/{pid}/exe"))
            r["path"] = path or ""
        if w_cmd:
            raw = procfs.read_bytes(f"/proc/{pid}/cmdline")
            r["cmdline"] = (raw or b"").rstrip(b"\0").replace(b"\0", b" ").decode(
                "utf-8", "surrogateescape")
        if w_cwd:
            r["cwd"] = readlink(f"/proc/{pid}/cwd") or ""
        if w_root:
            r["root"] = readlink(f"/proc/{pid}/root") or ""
        if w_io:
            r["disk_bytes_read"], r["disk_bytes_written"] = _io(pid)
        if w_cg:
            r["cgroup_path"] = cgroup_path(pid) or ""
        rows.append(r)
    return {c.name: [r.get(c.name) for r in rows] for c in TABLE.columns if not c.hidden}


TABLE = table(
    "processes",
    "All running processes on the host system (osquery's processes, Linux columns).",
    [
        col("pid", "BIGINT", "Process (or thread) ID"),
        col("name", "TEXT", "The process path or shorthand argv[0] (Linux: the kernel's "
            "comm from /proc/PID/status, at most 15 characters)"),
        col("path", "TEXT", "Path to executed binary; '' when not readable (kernel "
            "threads, other users' processes without root)"),
        col("cmdline", "TEXT", "Complete argv, joined by spaces"),
        col("state", "TEXT", "Process state: the kernel's letter (R, S, D, Z, T, I, ...)"),
        col("cwd", "TEXT", "Process current working directory ('' when not readable)"),
        col("root", "TEXT", "Process virtual root directory ('' when not readable)"),
        col("uid", "BIGINT", "Unsigned user ID"),
        col("gid", "BIGINT", "Unsigned group ID"),
        col("euid", "BIGINT", "Unsigned effective user ID"),
        col("egid", "BIGINT", "Unsigned effective group ID"),
        col("suid", "BIGINT", "Unsigned saved user ID"),
        col("sgid", "BIGINT", "Unsigned saved group ID"),
        col("on_disk", "INTEGER", "The process path exists yes=1, no=0, unknown=-1"),
        col("wired_size", "BIGINT", "Bytes of unpageable memory used by process (0 on "
            "Linux)"),
        col("resident_size", "BIGINT", "Bytes of resident memory (VmRSS)"),
        col("total_size", "BIGINT", "Total virtual memory size (VmSize)"),
        col("user_time", "BIGINT", "CPU time in milliseconds spent in user space"),
        col("system_time", "BIGINT", "CPU time in milliseconds spent in kernel space"),
        col("disk_bytes_read", "BIGINT", "Bytes read from disk (/proc/PID/io; NULL "
            "when not readable)"),
        col("disk_bytes_written", "BIGINT", "Bytes written to disk, less cancelled writes"),
        col("start_time", "BIGINT", "Process start time in seconds since Epoch, -1 on "
            "error"),
        col("parent", "BIGINT", "Process parent's PID"),
        col("pgroup", "BIGINT", "Process group"),
        col("threads", "INTEGER", "Number of threads used by process"),
        col("nice", "INTEGER", "Process nice level (-20 to 19, default 0)"),
        *(col(n, t, "Another platform's column: hidden, always NULL on Linux", hidden=True)
          for n, t in OTHER_PLATFORMS),
        col("cgroup_path", "TEXT", "The full hierarchical path of the process's control "
            "group"),
    ],
    collect,
    examples=("SELECT pid, name, path FROM processes WHERE on_disk = 0",
              "SELECT name, count(*) AS n FROM processes GROUP BY name ORDER BY n DESC"),
    notes="netsql's own processes table has other columns (ppid, username, start_time as "
    "TIMESTAMP, rss, net_namespace); this one is osquery's.",
)
