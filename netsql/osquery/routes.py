"""osquery.routes: the routing tables as osquery's Linux routes shows them (rtnetlink)."""

from __future__ import annotations

import socket
from typing import Any

from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

#: rtm_type -> osquery's type names (RTN_UNICAST is 'gateway'; the rest 'other').
TYPES = {1: "gateway", 2: "local", 3: "broadcast", 4: "anycast"}
RTM_F_CLONED = 0x200
NAMES = ("destination", "netmask", "gateway", "source", "flags", "interface", "mtu",
         "metric", "type", "hopcount")


def _metrics(msg: Any) -> tuple[int, int]:
    mtu = hops = 0
    metrics = msg.get_attr("RTA_METRICS")
    if metrics is not None:
        mtu = metrics.get_attr("RTAX_MTU") or 0
        hops = metrics.get_attr("RTAX_HOPLIMIT") or 0
    return mtu, hops


def _routes() -> Columns:
    from pyroute2 import IPRoute  # 350 ms to import: only when a statement needs routes

    ifnames = dict(socket.if_nameindex())
    with IPRoute() as ipr:
        msgs = [*ipr.get_routes(family=socket.AF_INET),
                *ipr.get_routes(family=socket.AF_INET6)]
    cols: Columns = {k: [] for k in NAMES}
    for m in msgs:
        if m["flags"] & RTM_F_CLONED:  # cache entries, as `ip route` hides them
            continue
        fam = m["family"]
        mtu, hops = _metrics(m)
        common = {
            "destination": m.get_attr("RTA_DST") or ("0.0.0.0" if fam == socket.AF_INET
                                                     else "::"),
            "netmask": m["dst_len"], "source": m.get_attr("RTA_PREFSRC"),
            "mtu": mtu, "metric": m.get_attr("RTA_PRIORITY") or 0,
            "type": TYPES.get(m["type"], "other"), "hopcount": hops,
        }
        hops_list = m.get_attr("RTA_MULTIPATH")
        paths = ([(h.get_attr("RTA_GATEWAY"), h["oif"], m["flags"] | h["flags"])
                  for h in hops_list] if hops_list else
                 [(m.get_attr("RTA_GATEWAY"), m.get_attr("RTA_OIF"), m["flags"])])
        for gw, oif, flags in paths:
            for k, v in common.items():
                cols[k].append(v)
            cols["gateway"].append(gw)
            cols["interface"].append(ifnames.get(oif) if oif else None)
            cols["flags"].append(flags)
    return cols


def collect(coll: Collection, need: Need) -> Columns:
    return dict(coll.once("osquery.routes", _routes))


TABLE = table(
    "routes",
    "The active route table for the host system (osquery's routes): IPv4 and IPv6 "
    "routes of every routing table of the current network namespace.",
    [
        col("destination", "TEXT", "Destination IP address ('0.0.0.0' or '::' for the "
            "default route)"),
        col("netmask", "INTEGER", "Netmask length (prefix length; 32 or 128 for a host "
            "route, where osquery says 0)"),
        col("gateway", "TEXT", "Route gateway; NULL when none"),
        col("source", "TEXT", "Route source (the preferred source address)"),
        col("flags", "INTEGER", "Flags to describe route (rtm_flags, with the next hop's "
            "for multipath routes)"),
        col("interface", "TEXT", "Route local interface"),
        col("mtu", "INTEGER", "Maximum Transmission Unit for the route (0: unset)"),
        col("metric", "INTEGER", "Cost of route. Lowest is preferred (0 when unset)"),
        col("type", "TEXT", "Type of route: gateway (unicast), local, broadcast, anycast, "
            "other"),
        col("hopcount", "INTEGER", "Max hops expected (the route's hop limit; 0: unset)"),
    ],
    collect,
    examples=("SELECT destination, netmask, gateway, interface FROM routes WHERE "
              "type = 'gateway'",),
    notes="A multipath route gives one row per next hop (osquery: one row, without "
    "interface or gateway). Route cache entries are left out.",
)
