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
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

RUN_NETNS = "/run/netns"
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


def call_in(handle: str | None, fn: Callable[[], T]) -> T:
    """``fn()`` run inside the namespace of ``handle`` (here when None), in a thread of
    its own that ends right after (a thread that called setns must not go back to
    serving Python code in the wrong namespace). Raises OSError when the namespace
    cannot be entered (gone, or no CAP_SYS_ADMIN), and whatever ``fn`` raises."""
    if handle is None:
        return fn()
    box: list[T | BaseException] = []

    def inside() -> None:
        try:
            enter(handle)
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
