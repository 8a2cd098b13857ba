"""interfaces: network interfaces of every network namespace, read over rtnetlink."""

from __future__ import annotations

from functools import partial
from typing import Any

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table

# ARPHRD_* link types as iproute2 names them (lib/ll_types.c); others show as a number.
LINK_TYPES = {1: "ether", 24: "ieee1394", 32: "infiniband", 256: "slip", 280: "can",
              512: "ppp", 519: "rawip", 768: "ipip", 769: "tunnel6", 772: "loopback",
              776: "sit", 778: "gre", 801: "ieee80211", 803: "ieee80211_radiotap",
              804: "ieee802154", 823: "ip6gre", 824: "netlink", 825: "6lowpan",
              826: "vsockmon", 65534: "none", 65535: "void"}
# IFF_* bits in the order and spelling of `ip link` (IFF_RUNNING is shown as NO-CARRIER).
IFF_UP, IFF_RUNNING = 0x1, 0x40
IFF_FLAGS = ((0x8, "LOOPBACK"), (0x2, "BROADCAST"), (0x10, "POINTOPOINT"),
             (0x1000, "MULTICAST"), (0x80, "NOARP"), (0x200, "ALLMULTI"), (0x100, "PROMISC"),
             (0x400, "MASTER"), (0x800, "SLAVE"), (0x4, "DEBUG"), (0x8000, "DYNAMIC"),
             (0x4000, "AUTOMEDIA"), (0x2000, "PORTSEL"), (0x20, "NOTRAILERS"), (0x1, "UP"),
             (0x10000, "LOWER_UP"), (0x20000, "DORMANT"), (0x40000, "ECHO"))
STATS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors",
         "rx_dropped", "tx_dropped")
NAMES = ("name", "index", "mac", "mtu", "is_up", "oper_state", "type", "link_type", "flags",
         "master", "addresses", *STATS, "net_namespace")


def link_flags(bits: int) -> list[str]:
    names = ["NO-CARRIER"] if bits & IFF_UP and not bits & IFF_RUNNING else []
    return names + [name for bit, name in IFF_FLAGS if bits & bit]


def _kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _interfaces(want_addresses: bool, ns: int) -> Columns:
    """The interfaces of the namespace this thread is in (``ns``)."""
    from pyroute2 import IPRoute  # 350 ms to import: only when a statement needs it

    with IPRoute() as ipr:
        links = list(ipr.get_links())
        addrs = list(ipr.get_addr()) if want_addresses else []
    by_index: dict[int, list[str]] = {}
    for a in addrs:
        ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
        if ip:
            by_index.setdefault(a["index"], []).append(f"{ip}/{a['prefixlen']}")
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in links}
    cols: Columns = {k: [] for k in NAMES}
    for m in links:
        index, bits = m["index"], m["flags"]
        link_type = LINK_TYPES.get(m["ifi_type"], str(m["ifi_type"]))
        mac = m.get_attr("IFLA_ADDRESS")
        stats = m.get_attr("IFLA_STATS64") or m.get_attr("IFLA_STATS") or {}
        cols["name"].append(names[index])
        cols["index"].append(index)
        cols["mac"].append(mac.lower() if isinstance(mac, str) else None)
        cols["mtu"].append(m.get_attr("IFLA_MTU"))
        cols["is_up"].append(bool(bits & IFF_UP))
        cols["oper_state"].append(m.get_attr("IFLA_OPERSTATE"))
        cols["type"].append(_kind(m) or link_type)
        cols["link_type"].append(link_type)
        cols["flags"].append(link_flags(bits))
        master = m.get_attr("IFLA_MASTER")
        cols["master"].append(names.get(master) if master else None)
        cols["addresses"].append(by_index.get(index, []) if want_addresses else None)
        for k in STATS:
            cols[k].append(stats.get(k))
        cols["net_namespace"].append(ns)
    return cols


def collect(coll: Collection, need: Need) -> Columns:
    want = need.wants("addresses")
    key = "interfaces" if want else "interfaces:noaddr"
    return dict(coll.once(key, lambda: procfs.each_namespace(
        coll, NAMES, partial(_interfaces, want))))


TABLE = Table(
    name="interfaces",
    description="Network interfaces of every network namespace, with their addresses "
    "and traffic counters (`ip -s addr` as a table, in each namespace).",
    columns=(
        Column("name", "VARCHAR", "Interface name ('lo', 'eth0', 'veth1a2b', ...)"),
        Column("index", "INTEGER", "Interface index (ifindex), unique in the namespace"),
        Column("mac", "VARCHAR", "Hardware address as the kernel reports it, lower-case "
               "colon form ('02:42:ac:11:00:02'; loopback has '00:00:00:00:00:00'); for IP "
               "tunnels the tunnel's own address bytes; NULL when the device has none "
               "(tun, wireguard)"),
        Column("mtu", "INTEGER", "Maximum transmission unit in bytes"),
        Column("is_up", "BOOLEAN", "Administratively up (IFF_UP, set by `ip link set X "
               "up`); the link may still lack a carrier, see oper_state"),
        Column("oper_state", "VARCHAR", "Operational state (RFC 2863): 'UP', 'DOWN', "
               "'UNKNOWN' (loopback and drivers that do not report it), 'DORMANT', "
               "'LOWERLAYERDOWN', 'NOTPRESENT', 'TESTING'"),
        Column("type", "VARCHAR", "Kind of device: the driver kind when the kernel names "
               "one ('veth', 'bridge', 'dummy', 'vlan', 'bond', 'wireguard', 'tun', ...), "
               "else the link type ('ether' for a physical NIC, 'loopback', ...)"),
        Column("link_type", "VARCHAR", "Link-layer (ARPHRD) type as ip names it: 'ether', "
               "'loopback', 'none', 'ipip', 'sit', 'gre', 'ieee80211', ...; the number "
               "as text when unknown"),
        Column("flags", "VARCHAR[]", "Interface flags as `ip link` prints them: 'UP', "
               "'LOWER_UP', 'BROADCAST', 'MULTICAST', 'LOOPBACK', 'NOARP', 'PROMISC', "
               "'SLAVE', 'NO-CARRIER' (up but no carrier), ..."),
        Column("master", "VARCHAR", "Name of the device this one is enslaved to (bridge, "
               "bond, VRF); NULL when none"),
        Column("addresses", "VARCHAR[]", "IPv4 and IPv6 addresses as CIDR text, IPv4 "
               "first ('127.0.0.1/8', '::1/128', 'fe80::1/64'; no zone suffix); [] when "
               "none. For a point-to-point address, the local end"),
        Column("rx_bytes", "BIGINT", "Bytes received since the device was created "
               "(IFLA_STATS64, like `ip -s link`)"),
        Column("tx_bytes", "BIGINT", "Bytes transmitted"),
        Column("rx_packets", "BIGINT", "Packets received"),
        Column("tx_packets", "BIGINT", "Packets transmitted"),
        Column("rx_errors", "BIGINT", "Receive errors (bad packets, CRC, overruns, ...)"),
        Column("tx_errors", "BIGINT", "Transmit errors"),
        Column("rx_dropped", "BIGINT", "Received packets dropped (no buffer, unknown "
               "protocol, ...)"),
        Column("tx_dropped", "BIGINT", "Packets dropped before transmission"),
        Column("net_namespace", "BIGINT", "Inode of the interface's network namespace (join "
               "with processes.net_namespace or sockets.net_namespace)"),
    ),
    collect=collect,
    examples=(
        "SELECT name, type, oper_state, addresses FROM interfaces ORDER BY index",
        "SELECT name, index, mac, mtu FROM interfaces WHERE is_up AND type <> 'loopback'",
        "SELECT name, unnest(addresses) AS address FROM interfaces",
        "SELECT name FROM interfaces WHERE list_contains(addresses, '127.0.0.1/8')",
        "SELECT name, rx_bytes + tx_bytes AS bytes, rx_errors + tx_errors AS errors "
        "FROM interfaces ORDER BY bytes DESC",
        "SELECT name, oper_state FROM interfaces WHERE is_up AND oper_state = 'DOWN'",
    ),
    notes="Dumps links and addresses over rtnetlink (pyroute2); no privileges needed. "
    "Every network namespace (entered through a process in it or its /run/netns entry; "
    "without root, only netsql's own); index and name are unique only within one "
    "namespace, so join on (net_namespace, name). Counters are the kernel's 64-bit "
    "totals since the device was created. "
    "Statements that do not use the addresses column skip the address dump.",
)
