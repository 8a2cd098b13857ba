"""osquery.interface_addresses: the IPv4 and IPv6 addresses of each interface."""

from __future__ import annotations

import socket

from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

NAMES = ("interface", "address", "mask", "broadcast", "point_to_point", "type")


def _addresses() -> Columns:
    import ipaddress

    from pyroute2 import IPRoute  # 350 ms to import: only when a statement needs it

    ifnames = dict(socket.if_nameindex())
    with IPRoute() as ipr:
        msgs = list(ipr.get_addr())
    cols: Columns = {k: [] for k in NAMES}
    for a in msgs:
        local, peer = a.get_attr("IFA_LOCAL"), a.get_attr("IFA_ADDRESS")
        addr = local or peer
        if not addr:
            continue
        v4 = a["family"] == socket.AF_INET
        net = (ipaddress.IPv4Network if v4 else ipaddress.IPv6Network)(
            f"0.0.0.0/{a['prefixlen']}" if v4 else f"::/{a['prefixlen']}")
        cols["interface"].append(a.get_attr("IFA_LABEL") or ifnames.get(a["index"]))
        cols["address"].append(addr)
        cols["mask"].append(str(net.netmask))
        cols["broadcast"].append(a.get_attr("IFA_BROADCAST"))
        cols["point_to_point"].append(peer if local and peer and peer != local else None)
        cols["type"].append("unknown")
    return cols


def collect(coll: Collection, need: Need) -> Columns:
    return dict(coll.once("osquery.interface_addresses", _addresses))


TABLE = table(
    "interface_addresses",
    "Network interfaces and relevant metadata (osquery's interface_addresses): one row "
    "per IPv4 or IPv6 address of the current network namespace.",
    [
        col("interface", "TEXT", "Interface name (the address label, 'eth0:1', for an "
            "IPv4 alias)"),
        col("address", "TEXT", "Specific address for interface"),
        col("mask", "TEXT", "Interface netmask ('255.255.255.0', 'ffff:ffff:ffff:ffff::')"),
        col("broadcast", "TEXT", "Broadcast address for the interface"),
        col("point_to_point", "TEXT", "PtP address for the interface"),
        col("type", "TEXT", "Type of address: always 'unknown' on Linux, as in osquery"),
    ],
    collect,
    examples=("SELECT interface, address, mask FROM interface_addresses",),
    notes="IPv6 link-local addresses come without a '%interface' suffix.",
)
