"""routes: IPv4 and IPv6 routes of every routing table, read over rtnetlink."""

from __future__ import annotations

import os
import socket
from functools import partial
from typing import Any

from netsql import procfs
from netsql.backends import require_linux
from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table

# iproute2's built-in names (lib/rt_names.c); /etc/iproute2 files add to them.
PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated",
             9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp",
             15: "ntk", 16: "dhcp", 17: "mrouted", 18: "keepalived", 42: "babel",
             99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp"}
TABLES = {0: "unspec", 253: "default", 254: "main", 255: "local"}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
TYPES = {0: "none", 1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
         6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat",
         11: "xresolve"}
# rtm_flags / rtnh_flags bits, in the order and spelling of `ip route`.
FLAGS = ((0x1, "dead"), (0x4, "onlink"), (0x2, "pervasive"), (0x8, "offload"),
         (0x40, "trap"), (0x100, "notify"), (0x10, "linkdown"), (0x20, "unresolved"),
         (0x4000, "rt_offload"), (0x8000, "rt_trap"), (0x20000000, "rt_offload_failed"))
NAMES = ("destination", "gateway", "interface", "metric", "source", "protocol", "type",
         "scope", "table", "family", "flags", "weight", "net_namespace")


def iproute2_names(coll: Collection, base: str, builtin: dict[int, str]) -> dict[int, str]:
    """Number -> name from iproute2's files (rt_protos, rt_tables, ...) over ``builtin``."""

    def load() -> dict[int, str]:
        names = dict(builtin)
        for d in ("/usr/share/iproute2", "/etc/iproute2"):
            paths = [f"{d}/{base}"]
            try:
                paths += sorted(f"{d}/{base}.d/{f}" for f in os.listdir(f"{d}/{base}.d")
                                if f.endswith(".conf"))
            except OSError:
                pass
            for path in paths:
                for line in (procfs.read_text(path) or "").splitlines():
                    f = line.split("#", 1)[0].split()
                    if len(f) >= 2:
                        try:
                            names[int(f[0], 0)] = f[1]
                        except ValueError:
                            continue
        return names

    return coll.once("iproute2:" + base, load)


def _flags(bits: int) -> list[str]:
    return [name for bit, name in FLAGS if bits & bit]


def _gateway(msg: Any) -> str | None:
    gw = msg.get_attr("RTA_GATEWAY")
    if gw is None:
        via = msg.get_attr("RTA_VIA")  # IPv4 route over an IPv6 next hop (RFC 5549)
        gw = via.get("addr") if isinstance(via, dict) else None
    return gw if isinstance(gw, str) else None


def _routes(coll: Collection, ns: int) -> Columns:
    """The routes of the namespace this thread is in (``ns``)."""
    from pyroute2 import IPRoute  # 350 ms to import: only when a statement needs routes

    protos = iproute2_names(coll, "rt_protos", PROTOCOLS)
    tables = iproute2_names(coll, "rt_tables", TABLES)
    scopes = iproute2_names(coll, "rt_scopes", SCOPES)
    ifnames = dict(socket.if_nameindex())
    cols: Columns = {k: [] for k in NAMES}
    with IPRoute() as ipr:
        msgs = [*ipr.get_routes(family=socket.AF_INET),
                *ipr.get_routes(family=socket.AF_INET6)]
    for m in msgs:
        fam = m["family"]
        if m["flags"] & 0x200:  # RTM_F_CLONED: cache entries, which `ip route` hides too
            continue
        zero = "0.0.0.0" if fam == socket.AF_INET else "::"
        dst = f"{m.get_attr('RTA_DST') or zero}/{m['dst_len']}"
        table = m.get_attr("RTA_TABLE") or m["table"]
        common = {
            "destination": dst, "metric": m.get_attr("RTA_PRIORITY"),
            "source": m.get_attr("RTA_PREFSRC"),
            "protocol": protos.get(m["proto"], str(m["proto"])),
            "type": TYPES.get(m["type"], str(m["type"])),
            "scope": scopes.get(m["scope"], str(m["scope"])),
            "table": tables.get(table, str(table)),
            "family": "ipv4" if fam == socket.AF_INET else "ipv6", "net_namespace": ns,
        }
        hops = m.get_attr("RTA_MULTIPATH")
        if hops:
            paths = [(_gateway(h), h["oif"], m["flags"] | h["flags"], h["hops"] + 1)
                     for h in hops]
        else:
            paths = [(_gateway(m), m.get_attr("RTA_OIF"), m["flags"], None)]
        for gw, oif, flags, weight in paths:
            for k, v in common.items():
                cols[k].append(v)
            cols["gateway"].append(gw)
            cols["interface"].append(ifnames.get(oif) if oif else None)
            cols["flags"].append(_flags(flags))
            cols["weight"].append(weight)
    return cols


#: Why routes is not read off Linux (one line, for the user).
NEEDS_LINUX = ("routes needs Linux (rtnetlink); on macOS and the BSDs, `netstat -rn` shows "
               "the routing table")


def collect(coll: Collection, need: Need) -> Columns:
    require_linux(NEEDS_LINUX)
    return dict(coll.once("routes", lambda: procfs.each_namespace(
        coll, NAMES, partial(_routes, coll))))


TABLE = Table(
    name="routes",
    description="IPv4 and IPv6 routes of every routing table of every network namespace "
    "(`ip route show table all` plus `ip -6 route show table all`, in each).",
    columns=(
        Column("destination", "VARCHAR", "Destination prefix as CIDR text, always with a "
               "length ('10.1.2.0/24', '127.0.0.1/32'); the default route is '0.0.0.0/0' "
               "or '::/0' (ip prints 'default')"),
        Column("gateway", "VARCHAR", "Next-hop router address (ip's 'via'; for an IPv4 "
               "route over an IPv6 next hop, that IPv6 address); NULL for directly "
               "connected, local, blackhole and other gateway-less routes"),
        Column("interface", "VARCHAR", "Name of the outgoing interface (ip's 'dev'); NULL "
               "when the route has none (IPv4 blackhole, unreachable, prohibit)"),
        Column("metric", "INTEGER", "Route priority, lower wins (RTA_PRIORITY); NULL when "
               "absent, as for most IPv4 routes. IPv6 routes always carry one (1024 for "
               "a user-added route, 256 for kernel prefix routes, 0 for local ones)"),
        Column("source", "VARCHAR", "Preferred source address for traffic on this route "
               "(ip's 'src', RTA_PREFSRC); NULL when unset"),
        Column("protocol", "VARCHAR", "Who installed the route: 'kernel' (from an address), "
               "'boot' (ip route add without proto, or at boot), 'static', 'dhcp', 'ra' "
               "(IPv6 router advertisement), 'bird', 'zebra', 'bgp', ...; names from "
               "iproute2's rt_protos, the number as text when it has no name"),
        Column("type", "VARCHAR", "'unicast', 'local' (an address of this host), "
               "'broadcast', 'multicast', 'anycast', 'blackhole' (silently dropped), "
               "'unreachable', 'prohibit' (rejected with ICMP), 'throw', 'nat'"),
        Column("scope", "VARCHAR", "How far the destination is: 'global' (via a gateway or "
               "anywhere; the kernel's RT_SCOPE_UNIVERSE), 'link' (directly attached), "
               "'host' (this machine), 'site', 'nowhere'; names as `ip route` prints them"),
        Column("table", "VARCHAR", "Routing table: 'main' (254, what `ip route` shows), "
               "'local' (255, addresses and broadcasts of this host), 'default' (253), "
               "a name from iproute2's rt_tables, or the table number as text ('100'); "
               "TABLE is an SQL keyword: write \"table\" in quotes or r.table"),
        Column("family", "VARCHAR", "'ipv4' or 'ipv6'"),
        Column("flags", "VARCHAR[]", "Route and next-hop flags as ip prints them: "
               "'onlink', 'linkdown', 'dead', 'offload', 'trap', ...; [] when none"),
        Column("weight", "INTEGER", "For a multipath (ECMP) route, which has one row per "
               "next hop, the weight of this next hop (ip's 'weight'); NULL otherwise"),
        Column("net_namespace", "BIGINT", "Inode of the network namespace the routes belong "
               "to (join with processes.net_namespace or sockets.net_namespace)"),
    ),
    collect=collect,
    examples=(
        "SELECT destination, gateway, interface, metric, protocol FROM routes "
        "WHERE \"table\" = 'main' ORDER BY family, destination",
        "SELECT destination, gateway, interface, metric FROM routes "
        "WHERE destination IN ('0.0.0.0/0', '::/0') ORDER BY family, metric",
        "SELECT \"table\", family, count(*) AS n FROM routes GROUP BY ALL ORDER BY n DESC",
        "SELECT destination, type, \"table\" FROM routes "
        "WHERE type IN ('blackhole', 'unreachable', 'prohibit')",
        "SELECT r.destination, r.gateway, i.name, i.oper_state FROM routes r "
        "JOIN interfaces i ON i.name = r.interface WHERE r.\"table\" = 'main'",
    ),
    notes="Dumps the IPv4 and IPv6 routes of every routing table over rtnetlink "
    "(pyroute2), in every network namespace (entered through a process in it or its "
    "/run/netns entry; without root, only netsql's own). Route cache / PMTU exceptions "
    "(`ip route show cache`), MPLS routes and policy rules (`ip rule`) are not included, "
    "nor the source selector of IPv6 source-specific routes (`from PREFIX`). "
    "A multipath route gives one row per next hop, each with its weight. Names of "
    "protocols, tables and scopes come from iproute2's files when present. Linux only: "
    "elsewhere a statement that reads routes fails with a one-line error.",
)
