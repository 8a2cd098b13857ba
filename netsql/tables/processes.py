"""processes: one row per process, read from /proc (only the files a statement needs).

Repeated statements (a ``--watch``, the shell) reuse the two costly reads, the command
line and the user ids, for up to :data:`REUSE_SECONDS`: the cache in the engine's state
is keyed by pid and by a fingerprint from ``/proc/PID/stat`` that every exec changes
(the start time, which tells a reused pid apart, and the addresses of the program's
code, stack, arguments and environment, which the kernel lays out anew, randomised, at
each exec). What can change without an exec (a process rewriting its own argv, as sshd
and postgres do; a setuid call) shows within that time. Everything else is read every
time.
"""

from __future__ import annotations

import os
import pwd
import time
from typing import Any

from netsql import containers, procfs
from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table

STATES = {
    "R": "running", "S": "sleeping", "D": "disk-sleep", "Z": "zombie", "T": "stopped",
    "t": "tracing-stop", "X": "dead", "I": "idle", "P": "parked", "W": "waking", "K": "wakekill",
}

_users: dict[int, str | None] = {}

#: How long a command line or user id read from /proc may be reused (see above).
REUSE_SECONDS = 5.0
_CACHE = "processes.reuse"  # engine.state.caches key: {"cmdline"|"ids": {pid: (fp, until, value)}}
# Fields of /proc/PID/stat after the name, 0-based from field 3: starttime (22),
# startcode, endcode, startstack (26-28), arg_start, arg_end, env_start, env_end (48-51).
_FINGERPRINT = (19, 23, 24, 25, 45, 46, 47, 48)


def username(uid: int | None) -> str | None:
    if uid is None:
        return None
    if uid not in _users:
        try:
            _users[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _users[uid] = None
    return _users[uid]


def _read(path: str) -> bytes | None:
    """A whole /proc file (os.open and os.read: half the cost of open())."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(fd, 65536))
    except OSError:
        return None
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _stat_fields(pid: int) -> tuple[str, list[str]] | None:
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    text = raw.decode("utf-8", "surrogateescape")
    # comm may hold spaces and parentheses: it runs from the first '(' to the last ')'.
    lp, rp = text.find("("), text.rfind(")")
    return text[lp + 1 : rp], text[rp + 2 :].split()


def _fingerprint(fields: list[str]) -> tuple[str, ...] | None:
    """What an exec changes; None when the addresses are hidden: a kernel thread, or a
    process we may not inspect (the kernel then shows its code addresses as 1 and the
    stack, argument and environment addresses as 0): then nothing is reused."""
    if len(fields) <= _FINGERPRINT[-1]:
        return None
    fp = tuple(fields[i] for i in _FINGERPRINT)
    return fp if "0" not in fp[3:] else None


class _Reuse:
    """Values read for one kind of file, reused while the fingerprint holds and for at
    most REUSE_SECONDS (spread per pid between half and all of it, so that re-reads
    spread over refreshes instead of coming all at once)."""

    def __init__(self, state: dict[str, Any], kind: str, full: bool) -> None:
        self.old: dict[int, tuple[tuple[str, ...], float, Any]] = state.setdefault(
            _CACHE, {}).setdefault(kind, {})
        self.new: dict[int, tuple[tuple[str, ...], float, Any]] = {} if full else self.old
        self.state, self.kind = state, kind
        self.now = time.monotonic()

    def get(self, pid: int, fp: tuple[str, ...] | None, read: Any) -> Any:
        hit = self.old.get(pid)
        if fp is not None and hit is not None and hit[0] == fp and hit[1] > self.now:
            self.new[pid] = hit
            return hit[2]
        value = read(pid)
        if fp is not None:
            spread = REUSE_SECONDS * (0.5 + (pid % 64) / 128)
            self.new[pid] = (fp, self.now + spread, value)
        else:
            self.new.pop(pid, None)
        return value

    def done(self) -> None:
        """Keep only the processes seen (after a pass over every process)."""
        self.state[_CACHE][self.kind] = self.new


def _ids(pid: int) -> tuple[int | None, int | None]:
    raw = _read(f"/proc/{pid}/status")
    text = raw.decode("utf-8", "surrogateescape") if raw is not None else ""
    uid = gid = None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
        elif line.startswith("Gid:"):
            gid = int(line.split()[1])
            break
    return uid, gid


def _cmdline(pid: int) -> str | None:
    raw = _read(f"/proc/{pid}/cmdline")
    if raw is None:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "surrogateescape")


def collect(coll: Collection, need: Need) -> Columns:
    pids = sorted(need.pids) if need.pids is not None else procfs.pids_of(coll)
    wants = need.wants
    w_ids = wants("uid", "gid", "username")
    w_cmd = wants("cmdline")
    # The costly files are reused between statements, keyed by what stat tells.
    w_stat = wants("ppid", "name", "state", "start_time", "threads", "rss") or w_ids or w_cmd
    full = need.pids is None
    cmd_reuse = _Reuse(coll.state.caches, "cmdline", full) if w_cmd else None
    ids_reuse = _Reuse(coll.state.caches, "ids", full) if w_ids else None
    w_path = wants("path", "exe_deleted")
    w_cwd, w_ns = wants("cwd"), wants("net_namespace")
    w_cgroup = wants("cgroup", "container_id", "container_runtime", "container_name")
    w_cname = wants("container_name")
    names_seen: dict[containers.Container, str | None] = {}
    boot = procfs.boot_time() if wants("start_time") else 0.0
    tck, page = procfs.CLK_TCK, procfs.PAGE_SIZE
    names = ("pid", "ppid", "name", "path", "exe_deleted", "cmdline", "username", "uid",
             "gid", "state", "start_time", "cwd", "threads", "rss", "net_namespace",
             "cgroup", "container_id", "container_runtime", "container_name")
    cols: Columns = {k: [] for k in names}
    readlink = procfs.read_link
    fp: tuple[str, ...] | None = None
    for pid in pids:
        if w_stat:
            st = _stat_fields(pid)
            if st is None:
                continue  # exited (or never existed)
            comm, f = st
            fp = _fingerprint(f)
            cols["ppid"].append(int(f[1]))
            cols["name"].append(comm)
            cols["state"].append(STATES.get(f[0], f[0]))
            cols["threads"].append(int(f[17]))
            cols["start_time"].append(boot + int(f[19]) / tck)
            cols["rss"].append(int(f[21]) * page)
        elif not os.path.exists(f"/proc/{pid}"):
            continue
        cols["pid"].append(pid)
        if ids_reuse is not None:
            uid, gid = ids_reuse.get(pid, fp, _ids)
            cols["uid"].append(uid)
            cols["gid"].append(gid)
            cols["username"].append(username(uid))
        if w_path:
            exe = readlink(f"/proc/{pid}/exe")
            deleted = exe is not None and exe.endswith(" (deleted)")
            cols["path"].append(exe[:-10] if deleted and exe else exe)
            cols["exe_deleted"].append(deleted if exe is not None else None)
        if cmd_reuse is not None:
            cols["cmdline"].append(cmd_reuse.get(pid, fp, _cmdline))
        if w_cwd:
            cols["cwd"].append(readlink(f"/proc/{pid}/cwd"))
        if w_ns:
            cols["net_namespace"].append(procfs.netns_of(pid))
        if w_cgroup:
            _container_columns(cols, pid, names_seen if w_cname else None)
    for reuse in (cmd_reuse, ids_reuse):
        if reuse is not None and full:
            reuse.done()
    n = len(cols["pid"])
    return {k: v for k, v in cols.items() if len(v) == n}


def _container_columns(cols: Columns, pid: int,
                       names: dict[containers.Container, str | None] | None) -> None:
    raw = _read(f"/proc/{pid}/cgroup")
    text = raw.decode("utf-8", "surrogateescape") if raw is not None else ""
    paths = containers.cgroup_paths(text)
    found = containers.container_of(paths)
    cols["cgroup"].append(containers.cgroup_of(text))
    cols["container_id"].append(found.id if found else None)
    cols["container_runtime"].append(found.runtime if found else None)
    cols["container_name"].append(
        containers.container_name(found, names) if found and names is not None else None)


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
        Column("cgroup", "VARCHAR", "The process's cgroup path (the unified hierarchy's, "
               "else systemd's or a controller's; '/' in the root)"),
        Column("container_id", "VARCHAR", "Id of the container the process runs in, from "
               "its cgroup (docker, podman, containerd, cri-o: the 64-hex id; "
               "systemd-nspawn, lxc: the machine or container name); NULL on the host"),
        Column("container_runtime", "VARCHAR", "'docker', 'podman', 'containerd' "
               "(Kubernetes included), 'cri-o', 'systemd-nspawn' or 'lxc'; NULL on the host"),
        Column("container_name", "VARCHAR", "The runtime's name for the container, read "
               "from its files without a daemon call (docker: the container name; podman: "
               "its first name; Kubernetes: namespace/pod/container; nspawn, lxc: the "
               "name); NULL when not readable"),
    ),
    collect=collect,
    examples=(
        "SELECT pid, name, cmdline FROM processes ORDER BY rss DESC LIMIT 5",
        "SELECT pid, name, path FROM processes WHERE exe_deleted",
        "SELECT username, count(*) AS n FROM processes GROUP BY username ORDER BY n DESC",
        "SELECT container_runtime, container_name, count(*) AS n FROM processes "
        "WHERE container_id IS NOT NULL GROUP BY ALL",
    ),
    notes="Reads /proc/<pid>/{stat,status,cmdline,exe,cwd,ns/net,cgroup}, only the files the "
    "statement's columns need; `WHERE pid = N` reads that one process. Without root, "
    "path, cwd and net_namespace of other users' processes are NULL. Statements run "
    "within 5 s of each other (a --watch, the shell) reuse cmdline and the user ids of "
    "a process that has not exec'd since (keyed by pid, start time and the addresses "
    "each exec lays out anew), so a process that rewrites its own command line or "
    "changes user shows the change within 5 s.",
)
