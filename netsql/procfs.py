"""Fast readers of Linux /proc shared by the host tables.

psutil is the portable fallback, but one psutil call per attribute per process is
5x slower than ``ps`` on a busy host (design.md section 4); these read only the
files a statement needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType

from netsql import netns
from netsql.collect import Collection
from netsql.schema import Columns

_cdiag: ModuleType | None
try:
    from netsql import _cdiag
except ImportError:  # built without a C compiler: _py_read_many
    _cdiag = None

PROC = "/proc"


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir(PROC) if n.isdigit()]


def pids_of(coll: Collection) -> list[int]:
    """Every pid, in order, listed once per collection pass (processes, namespaces and
    socket owners all walk it; do not modify the list)."""
    return coll.once("pids", lambda: sorted(all_pids()))


def read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None


def read_bytes(path: str) -> bytes | None:
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


def read_many(pids: Sequence[int], files: Sequence[str], links: Sequence[str] = (),
              threads: int = 1) -> list[tuple[bytes | str | None, ...]]:
    """For each of ``pids``, a tuple: /proc/PID/NAME's bytes for each of ``files``
    (:func:`read_bytes`), then the text of /proc/PID/NAME for each of ``links``
    (:func:`read_link`); None for what cannot be read (a process gone). Compiled
    (_cdiag.read_many) when built: ``threads`` threads read without the GIL."""
    compiled = getattr(_cdiag, "read_many", None)  # (None too from an older build)
    if compiled is None:
        return _py_read_many(pids, files, links)
    result: list[tuple[bytes | str | None, ...]] = compiled(list(pids), list(files),
                                                             list(links), threads)
    return result


def _py_read_many(pids: Sequence[int], files: Sequence[str], links: Sequence[str] = ()
                  ) -> list[tuple[bytes | str | None, ...]]:
    """The pure-Python _cdiag.read_many."""
    return [tuple([read_bytes(f"{PROC}/{pid}/{name}") for name in files]
                  + [read_link(f"{PROC}/{pid}/{name}") for name in links]) for pid in pids]


def stat_fields(pid: int) -> tuple[str, list[str]] | None:
    """(comm, the fields of /proc/PID/stat after it): ``fields[0]`` is the state,
    ``fields[1]`` the ppid, ... (proc(5)'s field N is ``fields[N - 3]``); None when
    the process is gone."""
    return parse_stat(read_bytes(f"{PROC}/{pid}/stat"))


def parse_stat(raw: bytes | str | None) -> tuple[str, list[str]] | None:
    """:func:`stat_fields` of a /proc/PID/stat already read (None: not read)."""
    if not isinstance(raw, bytes):
        return None
    text = raw.decode("utf-8", "surrogateescape")
    # comm may hold spaces and parentheses: it runs from the first '(' to the last ')'.
    lp, rp = text.find("("), text.rfind(")")
    return text[lp + 1 : rp], text[rp + 2 :].split()


def read_link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _ns_inode(link: str | None) -> int | None:
    # "net:[4026531840]"
    if not link or not link.startswith("net:["):
        return None
    return int(link[5:-1])


def netns_of(pid: int | str) -> int | None:
    return _ns_inode(read_link(f"{PROC}/{pid}/ns/net"))


def own_netns() -> int | None:
    return _ns_inode(read_link(f"{PROC}/self/ns/net"))


def namespaces(coll: Collection) -> dict[int, str]:
    """Every network namespace -> a handle to enter it (netns.call_in): ``/proc/self/ns/
    net`` for our own, ``/proc/PID/ns/net`` of a process inside it, else the
    ``/run/netns`` bind mount of one that `ip netns add` made and no process is in.

    Namespaces whose processes we may not inspect (not root) are invisible, and so are
    namespaces with neither a process nor a /run/netns entry (held by an open file or
    a mount elsewhere).
    """

    def scan() -> dict[int, str]:
        found: dict[int, str] = {}
        me = own_netns()
        if me is not None:
            found[me] = f"{PROC}/self/ns/net"
        for pid in pids_of(coll):
            ns = netns_of(pid)
            if ns is not None and ns not in found:
                found[ns] = f"{PROC}/{pid}/ns/net"
        for ns, (_name, handle) in netns.named().items():
            found.setdefault(ns, handle)
        return found

    return coll.once("netns", scan)


def each_namespace(coll: Collection, names: Sequence[str],
                   read: Callable[[int], Columns]) -> Columns:
    """``read(inode)`` run inside every network namespace, its columns concatenated.
    Namespaces that cannot be entered (no CAP_SYS_ADMIN, or gone meanwhile) are left
    out."""
    own = own_netns()
    cols: Columns = {k: [] for k in names}
    for ns, handle in namespaces(coll).items():
        try:
            part = netns.call_in(None if ns == own else handle, partial(read, ns))
        except OSError:
            continue
        for k in names:
            cols[k].extend(part[k])
    return cols


def proc_dir(handle: str) -> str | None:
    """The /proc/PID directory of a namespace handle from :func:`namespaces` (its
    /proc/PID/net files show that namespace), None for a /run/netns handle."""
    return handle[: -len("/ns/net")] if handle.startswith(f"{PROC}/") else None


@dataclass
class Owners:
    """Socket inode -> owning processes, from one scan of /proc/*/fd."""

    first: dict[int, tuple[int, int]]  # inode -> (pid, fd) of the lowest pid
    all_pids: dict[int, list[int]]  # inode -> every pid holding it (when more than one)
    unreadable: int  # processes whose fd directory we could not read
    reused: bool = False  # some processes' sockets came from the last pass


def socket_owners(coll: Collection, pids: Iterable[int] | None = None,
                  expect: Iterable[int] | None = None) -> Owners:
    """Scan fd directories (all processes, or ``pids``) for socket inodes.

    A full scan remembers each process's sockets in ``coll.state.caches`` (which lives as long
    as the engine: a shell, a watch) keyed by the identity and size of its fd
    directory, and later passes re-read only processes that are new or whose number
    of open files changed: one stat() instead of a readlink() per descriptor. When a
    socket of ``expect`` (the inodes the kernel listed) has no owner after such a
    pass, every process is read afresh, so a socket opened in place of a closed one
    is never missed.
    """
    key = "owners" if pids is None else "owners:" + ",".join(map(str, sorted(pids)))

    def scan() -> Owners:
        if pids is not None:
            return _scan(sorted(pids), None, False)
        cache: dict[int, tuple[int, int, list[tuple[int, int]]]] = coll.state.caches.setdefault(
            "fd_cache", {})
        # Sockets a full pass found no owner for (held by a process we may not read,
        # or by none): their absence does not mean the cache is stale.
        ownerless: set[int] = coll.state.caches.setdefault("fd_ownerless", set())
        everyone = pids_of(coll)
        owners = _scan(everyone, cache, False)
        if owners.reused and expect is not None and any(
                i and i not in owners.first and i not in ownerless for i in expect):
            owners = _scan(everyone, cache, True)
        if expect is not None and (not owners.reused or not ownerless):
            ownerless.clear()
            ownerless.update(i for i in expect if i and i not in owners.first)
        for gone in set(cache) - set(everyone):
            del cache[gone]
        return owners

    return coll.once(key, scan)


def _scan(pids: list[int], cache: dict[int, tuple[int, int, list[tuple[int, int]]]] | None,
          force: bool) -> Owners:
    first: dict[int, tuple[int, int]] = {}
    many: dict[int, list[int]] = {}
    unreadable = 0
    reused = False
    readlink, listdir, stat = os.readlink, os.listdir, os.stat
    for pid in pids:
        base = f"{PROC}/{pid}/fd/"
        socks: list[tuple[int, int]] | None = None
        st = None
        if cache is not None:
            try:
                st = stat(base)
            except OSError:
                continue
            hit = cache.get(pid)
            # st_size is the number of open files (Linux 6.2+; 0 before: no reuse).
            if (not force and hit is not None and st.st_size and hit[0] == st.st_ino
                    and hit[1] == st.st_size):
                socks, reused = hit[2], True
        if socks is None:
            try:
                fds = listdir(base)
            except PermissionError:
                unreadable += 1
                continue
            except OSError:
                continue
            socks = []
            for name in fds:
                try:
                    target = readlink(base + name)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    socks.append((int(target[8:-1]), int(name)))
            if cache is not None and st is not None:
                cache[pid] = (st.st_ino, st.st_size, socks)
        for inode, fdnum in socks:
            if inode in first:
                holders = many.setdefault(inode, [first[inode][0]])
                if holders[-1] != pid:
                    holders.append(pid)
            else:
                first[inode] = (pid, fdnum)
    return Owners(first, many, unreadable, reused)


def boot_time() -> float:
    text = read_text(f"{PROC}/stat") or ""
    for line in text.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
