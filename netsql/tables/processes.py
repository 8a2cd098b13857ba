"""processes: one row per process (the backend of the pass reads them: see
netsql/backends/)."""

from __future__ import annotations

from netsql import backends
from netsql.backends.psutil_backend import linux_only
from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table


def collect(coll: Collection, need: Need) -> Columns:
    return backends.current(coll).processes(coll, need)


TABLE = Table(
    name="processes",
    description="Running processes: one row per process.",
    columns=linux_only("processes", (
        Column("pid", "INTEGER", "Process id"),
        Column("ppid", "INTEGER", "Parent process id"),
        Column("name", "VARCHAR", "Process name as the kernel keeps it (comm, at most 15 "
               "characters); with the psutil backend, psutil's name, which completes a "
               "cut name from the command line"),
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
    )),
    platforms=backends.PLATFORMS,
    collect=collect,
    examples=(
        "SELECT pid, name, cmdline FROM processes ORDER BY rss DESC LIMIT 5",
        "SELECT pid, name, path FROM processes WHERE exe_deleted",
        "SELECT username, count(*) AS n FROM processes GROUP BY username ORDER BY n DESC",
        "SELECT container_runtime, container_name, count(*) AS n FROM processes "
        "WHERE container_id IS NOT NULL GROUP BY ALL",
    ),
    notes="Natively (Linux) reads /proc/<pid>/{stat,statm,status,cmdline,exe,cwd,ns/net,cgroup}, "
    "only the files the statement's columns need; `WHERE pid = N` reads that one "
    "process. Without root, path, cwd and net_namespace of other users' processes are "
    "NULL. Statements run within 5 s of each other (a --watch, the shell) reuse cmdline "
    "and the user ids of a process that has not exec'd since (keyed by pid, start time "
    "and the addresses each exec lays out anew), so a process that rewrites its own "
    "command line or changes user shows the change within 5 s. Elsewhere (or with "
    "NETSQL_BACKEND=psutil) psutil reads them, asked only for the attributes the "
    "statement's columns need.",
)
