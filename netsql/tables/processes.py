"""processes: one row per process, read from /proc (only the files a statement needs)."""

from __future__ import annotations

import os
import pwd

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table

STATES = {
    "R": "running", "S": "sleeping", "D": "disk-sleep", "Z": "zombie", "T": "stopped",
    "t": "tracing-stop", "X": "dead", "I": "idle", "P": "parked", "W": "waking", "K": "wakekill",
}

_users: dict[int, str | None] = {}


def username(uid: int | None) -> str | None:
    if uid is None:
        return None
    if uid not in _users:
        try:
            _users[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _users[uid] = None
    return _users[uid]


def _stat_fields(pid: int) -> tuple[str, list[str]] | None:
    text = procfs.read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    # comm may hold spaces and parentheses: it runs from the first '(' to the last ')'.
    lp, rp = text.find("("), text.rfind(")")
    return text[lp + 1 : rp], text[rp + 2 :].split()


def _ids(pid: int) -> tuple[int | None, int | None]:
    text = procfs.read_text(f"/proc/{pid}/status") or ""
    uid = gid = None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
        elif line.startswith("Gid:"):
            gid = int(line.split()[1])
            break
    return uid, gid


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "surrogateescape")


def collect(coll: Collection, need: Need) -> Columns:
    pids = sorted(need.pids) if need.pids is not None else procfs.all_pids()
    wants = need.wants
    w_stat = wants("ppid", "name", "state", "start_time", "threads", "rss")
    w_ids = wants("uid", "gid", "username")
    w_path = wants("path", "exe_deleted")
    w_cmd, w_cwd, w_ns = wants("cmdline"), wants("cwd"), wants("net_namespace")
    boot = procfs.boot_time() if wants("start_time") else 0.0
    tck, page = procfs.CLK_TCK, procfs.PAGE_SIZE
    names = ("pid", "ppid", "name", "path", "exe_deleted", "cmdline", "username", "uid",
             "gid", "state", "start_time", "cwd", "threads", "rss", "net_namespace")
    cols: Columns = {k: [] for k in names}
    readlink = procfs.read_link
    for pid in pids:
        if w_stat:
            st = _stat_fields(pid)
            if st is None:
                continue  # exited (or never existed)
            comm, f = st
            cols["ppid"].append(int(f[1]))
            cols["name"].append(comm)
            cols["state"].append(STATES.get(f[0], f[0]))
            cols["threads"].append(int(f[17]))
            cols["start_time"].append(boot + int(f[19]) / tck)
            cols["rss"].append(int(f[21]) * page)
        elif not os.path.exists(f"/proc/{pid}"):
            continue
        cols["pid"].append(pid)
        if w_ids:
            uid, gid = _ids(pid)
            cols["uid"].append(uid)
            cols["gid"].append(gid)
            cols["username"].append(username(uid))
        if w_path:
            exe = readlink(f"/proc/{pid}/exe")
            deleted = exe is not None and exe.endswith(" (deleted)")
            cols["path"].append(exe[:-10] if deleted and exe else exe)
            cols["exe_deleted"].append(deleted if exe is not None else None)
        if w_cmd:
            cols["cmdline"].append(_cmdline(pid))
        if w_cwd:
            cols["cwd"].append(readlink(f"/proc/{pid}/cwd"))
        if w_ns:
            cols["net_namespace"].append(procfs.netns_of(pid))
    n = len(cols["pid"])
    return {k: v for k, v in cols.items() if len(v) == n}


TABLE = Table(
    name="processes",
    description="Running processes: one row per process.",
    columns=(
        Column("pid", "INTEGER", "Process id"),
        Column("ppid", "INTEGER", "Parent process id"),
        Column("name", "VARCHAR", "Process name as the kernel keeps it (comm, at most 15 "
               "characters)"),
        Column("path", "VARCHAR", "Path of the executable; NULL when not readable "
               "(kernel threads, other users' processes without root)"),
        Column("exe_deleted", "BOOLEAN", "True when the executable was deleted or replaced "
               "after the process started"),
        Column("cmdline", "VARCHAR", "Command line, arguments joined by spaces ('' for "
               "kernel threads)"),
        Column("username", "VARCHAR", "Name of the real user"),
        Column("uid", "INTEGER", "Real user id"),
        Column("gid", "INTEGER", "Real group id"),
        Column("state", "VARCHAR", "'running', 'sleeping', 'disk-sleep', 'zombie', "
               "'stopped', 'idle', ..."),
        Column("start_time", "TIMESTAMP", "When the process started (UTC)"),
        Column("cwd", "VARCHAR", "Current working directory; NULL when not readable"),
        Column("threads", "INTEGER", "Number of threads"),
        Column("rss", "BIGINT", "Resident memory in bytes"),
        Column("net_namespace", "BIGINT", "Inode of the process's network namespace (join "
               "with sockets.net_namespace)"),
    ),
    collect=collect,
    examples=(
        "SELECT pid, name, cmdline FROM processes ORDER BY rss DESC LIMIT 5",
        "SELECT pid, name, path FROM processes WHERE exe_deleted",
        "SELECT username, count(*) AS n FROM processes GROUP BY username ORDER BY n DESC",
    ),
    notes="Reads /proc/<pid>/{stat,status,cmdline,exe,cwd,ns/net}, only the files the "
    "statement's columns need; `WHERE pid = N` reads that one process. Without root, "
    "path, cwd and net_namespace of other users' processes are NULL.",
)
