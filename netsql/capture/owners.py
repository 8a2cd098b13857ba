"""Which process holds a socket inode: a scan of candidate processes' fd tables, each
process's likely fds first (FdHints), stopping at the first hit."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable

from netsql.capture.procevents import read_comm

Owner = tuple[int, str | None]  # pid, name


def newest_pids() -> list[int]:
    try:
        return sorted((int(n) for n in os.listdir("/proc") if n.isdigit()), reverse=True)
    except OSError:
        return []


class FdHints:
    """Per process, the fd numbers where its DNS sockets were found lately.

    A client that opens a socket per query and closes it gets the same (lowest free)
    fd number each time, and one that keeps them gets the next ones: looking there
    first costs one readlink, where a scan of a process with 13,400 sockets costs
    tens of milliseconds."""

    def __init__(self, max_pids: int = 1024, max_inodes: int = 4096) -> None:
        self.by_pid: OrderedDict[int, list[int]] = OrderedDict()
        self.max_pids = max_pids
        #: inode -> (pid, fd) where it was found: a socket that sends again (a client
        #: that keeps its socket) costs one readlink, checked, then no scan at all.
        self.by_inode: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self.max_inodes = max_inodes

    def guesses(self, pid: int) -> list[int]:
        fds = self.by_pid.get(pid)
        if not fds:
            return []
        top = max(fds)
        return [*fds, top + 1, top + 2, top + 3]

    def hit(self, pid: int, fd: int, inode: int | None = None) -> None:
        fds = [fd, *(f for f in self.by_pid.get(pid, []) if f != fd)][:4]
        self.by_pid[pid] = fds
        self.by_pid.move_to_end(pid)
        while len(self.by_pid) > self.max_pids:
            self.by_pid.popitem(last=False)
        if inode is not None:
            self.by_inode[inode] = (pid, fd)
            self.by_inode.move_to_end(inode)
            while len(self.by_inode) > self.max_inodes:
                self.by_inode.popitem(last=False)


def _socket_inode(path: str) -> int | None:
    try:
        target = os.readlink(path)
    except OSError:
        return None
    return int(target[8:-1]) if target.startswith("socket:[") else None


def promote(recent: list[int], pid: int, limit: int = 64) -> None:
    """``pid`` first in the latest senders (most recent first, at most ``limit``)."""
    if recent[:1] != [pid]:
        if pid in recent:
            recent.remove(pid)
        recent.insert(0, pid)
        del recent[limit:]


def hinted_owner(inode: int, recent: list[int], hints: FdHints) -> int | None:
    """The process holding ``inode``, looked for only where hints point: where that
    inode was seen (one readlink), then the hinted fds of each of ``recent`` in turn
    (scan_for's first steps, without its scans; _chold.c's hinted_owner is the
    compiled twin). ``recent`` and ``hints`` learn where it was found."""
    at = hints.by_inode.get(inode)
    if at is not None and _socket_inode(f"/proc/{at[0]}/fd/{at[1]}") == inode:
        promote(recent, at[0])
        return at[0]
    for pid in list(recent):
        base = f"/proc/{pid}/fd/"
        for fd in hints.guesses(pid):
            if _socket_inode(base + str(fd)) == inode:
                hints.hit(pid, fd, inode)
                promote(recent, pid)
                return pid
    return None


def scan_for(inodes: set[int], pids: Iterable[int],
             hints: FdHints | None = None) -> dict[int, Owner]:
    """Owners of ``inodes`` among ``pids`` (in that order, stopping when all found);
    where ``hints`` saw an inode before is checked first (one readlink), and each
    process's hinted fds before its whole fd table. The name is read from /proc at
    once: a table of names from the kernel's process events can lag an exec (`sh -c
    'exec getent ...'` would be named sh)."""
    found: dict[int, Owner] = {}
    want = set(inodes)
    if hints is not None:
        for wanted in list(want):
            at = hints.by_inode.get(wanted)
            if at is not None and _socket_inode(f"/proc/{at[0]}/fd/{at[1]}") == wanted:
                found[wanted] = (at[0], read_comm(at[0]))
                want.discard(wanted)
        if not want:
            return found
    seen: set[int] = set()
    for pid in pids:
        if pid in seen:
            continue
        seen.add(pid)
        base = f"/proc/{pid}/fd/"
        for fd in hints.guesses(pid) if hints is not None else ():
            held = _socket_inode(base + str(fd))
            if held is not None and held in want:
                assert hints is not None
                found[held] = (pid, read_comm(pid))
                want.discard(held)
                hints.hit(pid, fd, held)
                if not want:
                    return found
        try:
            fds = os.listdir(base)
        except OSError:
            continue
        for name in fds:
            held = _socket_inode(base + name)
            if held is not None and held in want:
                found[held] = (pid, read_comm(pid))
                want.discard(held)
                if hints is not None:
                    hints.hit(pid, int(name), held)
                if not want:
                    return found
    return found


def scan_inodes(pid: int) -> list[int]:
    base = f"/proc/{pid}/fd/"
    out = []
    try:
        for fd in os.listdir(base):
            try:
                target = os.readlink(base + fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.append(int(target[8:-1]))
    except OSError:
        pass
    return out
