"""net_namespaces: every network namespace of the host, with its `ip netns` name, how
many processes live in it, and the containers they belong to."""

from __future__ import annotations

from netsql import containers, netns, procfs
from netsql.backends import require_linux
from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table

NAMES = ("net_namespace", "name", "processes", "pids", "container_runtime",
         "container_ids", "container_names", "is_current")
#: At most this many pids are listed per namespace (the count is always whole).
PIDS_SHOWN = 16


#: Why net_namespaces is not read off Linux (one line, for the user).
NEEDS_LINUX = ("net_namespaces needs Linux: network namespaces are a Linux kernel "
               "feature (macOS and the BSDs have one network stack, or jails on FreeBSD)")


def collect(coll: Collection, need: Need) -> Columns:
    require_linux(NEEDS_LINUX)
    handles = procfs.namespaces(coll)
    named = {ns: name for ns, (name, _path) in netns.named().items()}
    members: dict[int, list[int]] = {ns: [] for ns in handles}
    for pid in procfs.pids_of(coll):
        ns = procfs.netns_of(pid)
        if ns is not None:
            members.setdefault(ns, []).append(pid)
    want_containers = need.wants("container_runtime", "container_ids", "container_names")
    names_seen: dict[containers.Container, str | None] = {}
    own = procfs.own_netns()
    cols: Columns = {k: [] for k in NAMES}
    for ns in sorted(members):
        pids = members[ns]
        found: list[containers.Container] = []
        if want_containers:
            for pid in pids:
                text = procfs.read_text(f"{procfs.PROC}/{pid}/cgroup") or ""
                c = containers.container_of(containers.cgroup_paths(text))
                if c is not None and c not in found:
                    found.append(c)
        cols["net_namespace"].append(ns)
        cols["name"].append(named.get(ns))
        cols["processes"].append(len(pids))
        cols["pids"].append(pids[:PIDS_SHOWN])
        cols["container_runtime"].append(found[0].runtime if found else None)
        cols["container_ids"].append([c.id for c in found])
        cols["container_names"].append(
            [containers.container_name(c, names_seen) for c in found])
        cols["is_current"].append(ns == own)
    return cols


TABLE = Table(
    name="net_namespaces",
    description="Every network namespace of the host: one row per namespace, with its "
    "`ip netns` name, its processes and the containers they run in.",
    columns=(
        Column("net_namespace", "BIGINT", "Inode of the namespace (the net_namespace "
               "column of every other table)"),
        Column("name", "VARCHAR", "Its name under /run/netns (`ip netns list`); NULL when "
               "it has none, as for most containers"),
        Column("processes", "INTEGER", "How many processes live in it (0 for a namespace "
               "that only an `ip netns` entry keeps)"),
        Column("pids", "INTEGER[]", "The lowest process ids in it, at most 16"),
        Column("container_runtime", "VARCHAR", "Runtime of the containers its processes "
               "run in (processes.container_runtime); NULL when none is in a container"),
        Column("container_ids", "VARCHAR[]", "Containers its processes run in (a "
               "Kubernetes pod's containers share one namespace); [] when none"),
        Column("container_names", "VARCHAR[]", "The runtimes' names of those containers, "
               "in the same order (NULL where not readable)"),
        Column("is_current", "BOOLEAN", "True for the namespace netsql itself runs in"),
    ),
    collect=collect,
    examples=(
        "SELECT net_namespace, name, processes, container_names FROM net_namespaces",
        "SELECT n.container_names, s.local_address, s.local_port FROM sockets s "
        "JOIN net_namespaces n USING (net_namespace) WHERE s.state = 'LISTEN'",
    ),
    notes="Namespaces are found through every process's /proc/<pid>/ns/net and the "
    "entries of /run/netns. Without root only netsql's own namespace and those of the "
    "user's processes are seen; a namespace held only by an open file or a mount "
    "elsewhere is not found. Containers are named as in processes (docs/containers.md). "
    "Linux only: elsewhere a statement that reads it fails with a one-line error.",
)
