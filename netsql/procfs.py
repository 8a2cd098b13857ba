"""Fast readers of Linux /proc shared by the host tables.

psutil is the portable fallback, but one psutil call per attribute per process is
5x slower than ``ps`` on a busy host (design.md section 4); these read only the
files a statement needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from netsql.collect import Collection

PROC = "/proc"


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir(PROC) if n.isdigit()]


def read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None


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
    """Every network namespace that some process lives in -> a /proc dir inside it.

    Our own namespace maps to ``/proc/self``. Namespaces whose processes we may not
    inspect (not root) are invisible; so are namespaces with no process in them
    (kept alive only by a bind mount under /run/netns).
    """

    def scan() -> dict[int, str]:
        found: dict[int, str] = {}
        me = own_netns()
        if me is not None:
            found[me] = f"{PROC}/self"
        for pid in all_pids():
            ns = netns_of(pid)
            if ns is not None and ns not in found:
                found[ns] = f"{PROC}/{pid}"
        return found

    return coll.once("netns", scan)


@dataclass
class Owners:
    """Socket inode -> owning processes, from one scan of /proc/*/fd."""

    first: dict[int, tuple[int, int]]  # inode -> (pid, fd) of the lowest pid
    all_pids: dict[int, list[int]]  # inode -> every pid holding it (when more than one)
    unreadable: int  # processes whose fd directory we could not read


def socket_owners(coll: Collection, pids: Iterable[int] | None = None) -> Owners:
    """Scan fd directories (all processes, or ``pids``) for socket inodes."""
    key = "owners" if pids is None else "owners:" + ",".join(map(str, sorted(pids)))

    def scan() -> Owners:
        first: dict[int, tuple[int, int]] = {}
        many: dict[int, list[int]] = {}
        unreadable = 0
        readlink = os.readlink
        listdir = os.listdir
        for pid in sorted(all_pids() if pids is None else pids):
            base = f"{PROC}/{pid}/fd/"
            try:
                fds = listdir(base)
            except PermissionError:
                unreadable += 1
                continue
            except OSError:
                continue
            for fd in fds:
                try:
                    target = readlink(base + fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inode = int(target[8:-1])
                    if inode in first:
                        holders = many.setdefault(inode, [first[inode][0]])
                        if holders[-1] != pid:
                            holders.append(pid)
                    else:
                        first[inode] = (pid, int(fd))
        return Owners(first, many, unreadable)

    return coll.once(key, scan)


def boot_time() -> float:
    text = read_text(f"{PROC}/stat") or ""
    for line in text.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
