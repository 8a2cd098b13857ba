"""Network namespaces: which there are, their `ip netns` names, and running code inside
one.

A namespace is known by the inode of its nsfs file (the ``net_namespace`` column of
every table) and entered through a handle: ``/proc/PID/ns/net`` of a process inside
it, or the bind mount ``ip netns add`` leaves under /run/netns (namespaces with no
process in them have only that). A thread can setns() into a namespace, open netlink
or packet sockets there, and those sockets stay bound to it after the thread ends: one
short-lived thread per namespace, no process per namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

RUN_NETNS = "/run/netns"
SELF = "/proc/thread-self/ns/net"
PID_MAX_LIMIT = 4_194_304  # the kernel's largest pid_max
CLONE_NEWNET = 0x40000000


def named() -> dict[int, tuple[str, str]]:
    """inode -> (name, handle path) of every namespace `ip netns` lists."""
    found: dict[int, tuple[str, str]] = {}
    try:
        entries = sorted(os.scandir(RUN_NETNS), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        try:
            inode = os.stat(entry.path).st_ino
        except OSError:
            continue
        found.setdefault(inode, (entry.name, entry.path))
    return found


def call_in(handle: str | None, fn: Callable[[], T], expect: int | None = None) -> T:
    """``fn()`` run inside the namespace of ``handle`` (here when None), in a thread of
    its own that ends right after (a thread that called setns must not go back to
    serving Python code in the wrong namespace). Raises OSError when the namespace
    cannot be entered (gone, or no CAP_SYS_ADMIN), and whatever ``fn`` raises.

    ``expect``: the namespace's inode. A /proc/PID handle outlives nothing: its process
    may have exited and the pid gone to a process elsewhere; then ESTALE, not ``fn``
    run in the wrong namespace."""
    if handle is None:
        return fn()
    box: list[T | BaseException] = []

    def inside() -> None:
        try:
            enter(handle)
            if expect is not None and os.stat(SELF).st_ino != expect:
                raise OSError(errno.ESTALE, f"{handle} is no longer network namespace "
                              f"{expect}")
            box.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            box.append(exc)

    t = threading.Thread(target=inside, daemon=True, name="netsql-setns")
    t.start()
    t.join()
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    return result


def enter(handle: str) -> None:
    """setns() the calling thread into the namespace of ``handle``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(handle, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), handle)
    finally:
        os.close(fd)


def resolve(spec: str) -> int:
    """The inode of the network namespace ``spec`` names: an inode (as the
    net_namespace columns show it), a name `ip netns` lists, or a pid (the namespace
    that process is in now). The one rule for every flag that names a namespace
    (``--netns``); ValueError with a one-line reason."""
    text = spec.strip()
    if text.isdigit():
        value = int(text)
        if value > PID_MAX_LIMIT:  # namespace inodes are near 2**32, pids below 2**22
            return value
        try:
            return os.stat(f"/proc/{value}/ns/net").st_ino
        except FileNotFoundError:
            raise ValueError(f"no process {value} (a --netns number up to 4194304 is a "
                             "pid, a larger one a namespace inode)") from None
        except OSError as exc:
            raise ValueError(f"cannot read the namespace of pid {value}: "
                             f"{exc.strerror}") from None
    for inode, (name, _path) in named().items():
        if name == text:
            return inode
    raise ValueError(f"no network namespace named {spec!r} (`ip netns list`); give an "
                     "inode, a name or a pid")
