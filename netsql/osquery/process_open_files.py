"""osquery.process_open_files: file descriptors of every process that name a file.

Sockets, pipes and anonymous inodes (eventfd, epoll, ...) are left out, as osquery does:
they are in process_open_sockets (sockets) or have no path.
"""

from __future__ import annotations

import os

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

SKIP = ("socket:", "pipe:", "anon_inode:")


def collect(coll: Collection, need: Need) -> Columns:
    pids = sorted(need.pids) if need.pids is not None else procfs.pids_of(coll)
    cols: Columns = {"pid": [], "fd": [], "path": []}
    unreadable = 0
    for pid in pids:
        base = f"/proc/{pid}/fd/"
        try:
            fds = os.listdir(base)
        except PermissionError:
            unreadable += 1
            continue
        except OSError:
            continue
        for name in fds:
            target = procfs.read_link(base + name)
            if target is None or target.startswith(SKIP):
                continue
            cols["pid"].append(pid)
            cols["fd"].append(int(name))
            cols["path"].append(target)
    if unreadable and need.pids is None:
        coll.warn(f"the open files of {unreadable} processes are not readable by this "
                  "user; run as root (sudo) to see them")
    return cols


TABLE = table(
    "process_open_files",
    "File descriptors for each process (osquery's process_open_files): files, "
    "devices and directories; no sockets, pipes or anonymous inodes.",
    [
        col("pid", "BIGINT", "Process (or thread) ID"),
        col("fd", "BIGINT", "Process-specific file descriptor number"),
        col("path", "TEXT", "Filesystem path of descriptor (' (deleted)' appended when "
            "the file was removed)"),
    ],
    collect,
    examples=("SELECT pid, fd, path FROM process_open_files WHERE path LIKE '/tmp/%'",),
    notes="`WHERE pid = N` reads that one process's descriptors.",
)
