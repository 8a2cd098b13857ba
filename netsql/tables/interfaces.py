"""interfaces: network interfaces of every network namespace (rtnetlink natively, else
psutil: see netsql/backends/)."""

from __future__ import annotations

from netsql import backends
from netsql.backends.psutil_backend import linux_only
from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table


def collect(coll: Collection, need: Need) -> Columns:
    return backends.current(coll).interfaces(coll, need)


TABLE = Table(
    name="interfaces",
    description="Network interfaces of every network namespace, with their addresses "
    "and traffic counters (`ip -s addr` as a table, in each namespace).",
    columns=linux_only("interfaces", (
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
               "'SLAVE', 'NO-CARRIER' (up but no carrier), ...; the psutil backend "
               "has no 'LOWER_UP', 'DORMANT' or 'ECHO' (flags only Linux reports)"),
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
    )),
    platforms=backends.PLATFORMS,
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
    notes="Natively (Linux) dumps links and addresses over rtnetlink (pyroute2); no "
    "privileges needed. "
    "Every network namespace (entered through a process in it or its /run/netns entry; "
    "without root, only netsql's own); index and name are unique only within one "
    "namespace, so join on (net_namespace, name). Counters are the kernel's 64-bit "
    "totals since the device was created. "
    "Statements that do not use the addresses column skip the address dump. Elsewhere "
    "(or with NETSQL_BACKEND=psutil) psutil's interface addresses, flags and counters, "
    "of the current network namespace only (on Linux, /proc/net/dev's counters: its "
    "rx_dropped adds missed packets).",
)
