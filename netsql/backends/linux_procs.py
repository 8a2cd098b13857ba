"""The native processes reader: /proc, only the files a statement needs.

Repeated statements (a ``--watch``, the shell, netsql serve's one-liners) reuse the
costly reads, the command line, the user ids, the executable's path, the network
namespace and the cgroup, for up to :data:`REUSE_SECONDS`: the cache in the engine's state
(``State.caches``) is keyed by pid and by a fingerprint from ``/proc/PID/stat`` that
every exec changes (the start time, which tells a reused pid apart, and the addresses of
the program's code, stack, arguments and environment, which the kernel lays out anew,
randomised, at each exec). What can change without an exec (a process rewriting its own
argv, as sshd and postgres do; a setuid call; setns or unshare; a move to another
cgroup; the executable deleted) shows within that time. Everything else (state, times,
rss, cwd) is read every time: with them cached a pass over 2,000 processes reads 3 files
of each instead of 8 (measured: 0.57 s of a 0.63 s `SELECT * FROM processes` was the
reading).
"""

from __future__ import annotations

import os
import time
from typing import Any

from netsql import containers, procfs
from netsql.backends.base import username
from netsql.collect import Collection, Need
from netsql.schema import Columns

STATES = {
    "R": "running", "S": "sleeping", "D": "disk-sleep", "Z": "zombie", "T": "stopped",
    "t": "tracing-stop", "X": "dead", "I": "idle", "P": "parked", "W": "waking", "K": "wakekill",
}

#: How long a command line or user id read from /proc may be reused (see above).
REUSE_SECONDS = 5.0
_CACHE = "processes.reuse"  # engine.state.caches key: {"cmdline"|"ids": {pid: (fp, until, value)}}
# Fields of /proc/PID/stat after the name, 0-based from field 3: starttime (22),
# startcode, endcode, startstack (26-28), arg_start, arg_end, env_start, env_end (48-51).
_FINGERPRINT = (19, 23, 24, 25, 45, 46, 47, 48)


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
    raw = procfs.read_bytes(f"/proc/{pid}/status")
    text = raw.decode("utf-8", "surrogateescape") if raw is not None else ""
    uid = gid = None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
        elif line.startswith("Gid:"):
            gid = int(line.split()[1])
            break
    return uid, gid


def _rss(raw: bytes | str | None, page: int) -> int | None:
    """Resident bytes from /proc/PID/statm (``raw``; None: not read), as it counts them
    (what ps, top and psutil show): the rss field of /proc/PID/stat is the kernel's
    per-CPU estimate, which lags it by up to 64 pages per CPU on recent kernels (the
    psutil backend's differential test found it)."""
    fields = raw.split() if isinstance(raw, bytes) else []
    return int(fields[1]) * page if len(fields) > 1 else None


#: Every process's stat, statm and cwd are read (procfs.read_many) by this many
#: threads at most, when there are at least READ_ALONE processes: the kernel's side of
#: /proc scales with the cores (2,000 processes on 2 cores: 47 ms on one thread, 24 ms
#: on two); below, starting threads costs more than it saves.
READERS = 4
READ_ALONE = 256


def _cmdline(pid: int) -> str | None:
    raw = procfs.read_bytes(f"/proc/{pid}/cmdline")
    if raw is None:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "surrogateescape")


def processes(coll: Collection, need: Need) -> Columns:
    """The processes table from /proc: only the files ``need``'s columns read."""
    pids = sorted(need.pids) if need.pids is not None else procfs.pids_of(coll)
    wants = need.wants
    w_ids = wants("uid", "gid", "username")
    w_cmd = wants("cmdline")
    # The costly files are reused between statements, keyed by what stat tells.
    w_stat = wants("ppid", "name", "state", "start_time", "threads") or w_ids or w_cmd
    w_rss = wants("rss")
    full = need.pids is None
    w_path = wants("path", "exe_deleted")
    w_cwd, w_ns = wants("cwd"), wants("net_namespace")
    w_cgroup = wants("cgroup", "container_id", "container_runtime", "container_name")
    w_cname = wants("container_name")
    w_stat = w_stat or w_path or w_ns or w_cgroup
    caches = coll.state.caches
    cmd_reuse = _Reuse(caches, "cmdline", full) if w_cmd else None
    ids_reuse = _Reuse(caches, "ids", full) if w_ids else None
    exe_reuse = _Reuse(caches, "exe", full) if w_path else None
    ns_reuse = _Reuse(caches, "netns", full) if w_ns else None
    cgroup_reuse = _Reuse(caches, "cgroup", full) if w_cgroup else None
    names_seen: dict[containers.Container, str | None] = {}
    boot = procfs.boot_time() if wants("start_time") else 0.0
    tck, page = procfs.CLK_TCK, procfs.PAGE_SIZE
    names = ("pid", "ppid", "name", "path", "exe_deleted", "cmdline", "username", "uid",
             "gid", "state", "start_time", "cwd", "threads", "rss", "net_namespace",
             "cgroup", "container_id", "container_runtime", "container_name")
    cols: Columns = {k: [] for k in names}
    # What is read of every process, read first for all of them (no cache: ps reads
    # them afresh too): stat, statm, the cwd link.
    files = [name for name, wanted in (("stat", w_stat), ("statm", w_rss)) if wanted]
    links = ["cwd"] if w_cwd else []
    threads = min(os.cpu_count() or 1, READERS) if len(pids) >= READ_ALONE else 1
    read = procfs.read_many(pids, files, links, threads) if files or links else None
    fp: tuple[str, ...] | None = None
    for i, pid in enumerate(pids):
        got = read[i] if read is not None else ()
        if w_stat:
            st = procfs.parse_stat(got[0])
            if st is None:
                continue  # exited (or never existed)
            comm, f = st
            fp = _fingerprint(f)
            cols["ppid"].append(int(f[1]))
            cols["name"].append(comm)
            cols["state"].append(STATES.get(f[0], f[0]))
            cols["threads"].append(int(f[17]))
            cols["start_time"].append(boot + int(f[19]) / tck)
        if w_rss:
            rss = _rss(got[1 if w_stat else 0], page)
            if rss is None and not w_stat:
                continue  # exited (or never existed)
            cols["rss"].append(rss)
        elif not w_stat and not os.path.exists(f"/proc/{pid}"):
            continue
        cols["pid"].append(pid)
        if ids_reuse is not None:
            uid, gid = ids_reuse.get(pid, fp, _ids)
            cols["uid"].append(uid)
            cols["gid"].append(gid)
            cols["username"].append(username(uid))
        if exe_reuse is not None:
            exe = exe_reuse.get(pid, fp, _exe)
            deleted = exe is not None and exe.endswith(" (deleted)")
            cols["path"].append(exe[:-10] if deleted and exe else exe)
            cols["exe_deleted"].append(deleted if exe is not None else None)
        if cmd_reuse is not None:
            cols["cmdline"].append(cmd_reuse.get(pid, fp, _cmdline))
        if w_cwd:
            cols["cwd"].append(got[-1])
        if ns_reuse is not None:
            cols["net_namespace"].append(ns_reuse.get(pid, fp, procfs.netns_of))
        if cgroup_reuse is not None:
            _container_columns(cols, cgroup_reuse.get(pid, fp, _cgroup),
                               names_seen if w_cname else None)
    for reuse in (cmd_reuse, ids_reuse, exe_reuse, ns_reuse, cgroup_reuse):
        if reuse is not None and full:
            reuse.done()
    n = len(cols["pid"])
    return {k: v for k, v in cols.items() if len(v) == n}


def _exe(pid: int) -> str | None:
    return procfs.read_link(f"/proc/{pid}/exe")


def _cgroup(pid: int) -> tuple[str | None, containers.Container | None]:
    """The cgroup column and the container it names, from /proc/PID/cgroup."""
    raw = procfs.read_bytes(f"/proc/{pid}/cgroup")
    text = raw.decode("utf-8", "surrogateescape") if raw is not None else ""
    return containers.cgroup_of(text), containers.container_of(containers.cgroup_paths(text))


def _container_columns(cols: Columns, cgroup: tuple[str | None, containers.Container | None],
                       names: dict[containers.Container, str | None] | None) -> None:
    found = cgroup[1]
    cols["cgroup"].append(cgroup[0])
    cols["container_id"].append(found.id if found else None)
    cols["container_runtime"].append(found.runtime if found else None)
    cols["container_name"].append(
        containers.container_name(found, names) if found and names is not None else None)
