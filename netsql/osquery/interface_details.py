"""osquery.interface_details: each interface's link details and 64-bit counters."""

from __future__ import annotations

import os

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

#: osquery's counter columns <- the kernel's IFLA_STATS64 names.
COUNTERS = (("ipackets", "rx_packets"), ("opackets", "tx_packets"), ("ibytes", "rx_bytes"),
            ("obytes", "tx_bytes"), ("ierrors", "rx_errors"), ("oerrors", "tx_errors"),
            ("idrops", "rx_dropped"), ("odrops", "tx_dropped"),
            ("collisions", "collisions"))
NAMES = ("interface", "mac", "type", "mtu", "metric", "flags", *(c for c, _ in COUNTERS),
         "last_change", "link_speed", "pci_slot")


def _speed(name: str) -> int | None:
    text = procfs.read_text(f"/sys/class/net/{name}/speed")
    try:
        value = int(text.strip()) if text else -1
    except ValueError:
        return None
    return value if value >= 0 else None


def _pci_slot(name: str) -> str | None:
    target = procfs.read_link(f"/sys/class/net/{name}/device")
    return os.path.basename(target) if target else None


def _details(want_sys: bool) -> Columns:
    from pyroute2 import IPRoute  # 350 ms to import: only when a statement needs it

    with IPRoute() as ipr:
        links = list(ipr.get_links())
    cols: Columns = {k: [] for k in NAMES}
    for m in links:
        name = m.get_attr("IFLA_IFNAME")
        mac = m.get_attr("IFLA_ADDRESS")
        stats = m.get_attr("IFLA_STATS64") or m.get_attr("IFLA_STATS") or {}
        cols["interface"].append(name)
        cols["mac"].append(mac.lower() if isinstance(mac, str) else None)
        cols["type"].append(m["ifi_type"])
        cols["mtu"].append(m.get_attr("IFLA_MTU"))
        cols["metric"].append(0)
        cols["flags"].append(m["flags"])
        for ours, kernel in COUNTERS:
            cols[ours].append(stats.get(kernel))
        cols["last_change"].append(-1)
        cols["link_speed"].append(_speed(name) if want_sys else None)
        cols["pci_slot"].append(_pci_slot(name) if want_sys else None)
    return cols


def collect(coll: Collection, need: Need) -> Columns:
    want = need.wants("link_speed", "pci_slot")
    return dict(coll.once(f"osquery.interface_details:{want}", lambda: _details(want)))


TABLE = table(
    "interface_details",
    "Detailed information and stats of network interfaces (osquery's "
    "interface_details), from rtnetlink.",
    [
        col("interface", "TEXT", "Interface name"),
        col("mac", "TEXT", "MAC of interface (lower-case)"),
        col("type", "INTEGER", "Interface type, the ARPHRD number (1 ether, 772 loopback; "
            "osquery cuts it to 8 bits, showing 4 for loopback)"),
        col("mtu", "INTEGER", "Network MTU"),
        col("metric", "INTEGER", "Metric based on the speed of the interface (0 on Linux)"),
        col("flags", "INTEGER", "Flags (netdevice) for the device: IFF_UP 0x1, "
            "IFF_LOOPBACK 0x8, IFF_PROMISC 0x100, ..."),
        col("ipackets", "BIGINT", "Input packets (64-bit: osquery's 32-bit counters wrap)"),
        col("opackets", "BIGINT", "Output packets"),
        col("ibytes", "BIGINT", "Input bytes (64-bit: osquery's wrap at 4 GiB)"),
        col("obytes", "BIGINT", "Output bytes"),
        col("ierrors", "BIGINT", "Input errors"),
        col("oerrors", "BIGINT", "Output errors"),
        col("idrops", "BIGINT", "Input drops"),
        col("odrops", "BIGINT", "Output drops"),
        col("collisions", "BIGINT", "Packet Collisions detected"),
        col("last_change", "BIGINT", "Time of last device modification (-1 on Linux)"),
        col("link_speed", "BIGINT", "Interface speed in Mb/s (/sys/class/net/X/speed); "
            "NULL when the driver reports none"),
        col("pci_slot", "TEXT", "PCI slot number ('0000:00:03.0'); NULL when not a PCI "
            "device (osquery: '-1')"),
    ],
    collect,
    examples=("SELECT interface, mac, ibytes, obytes FROM interface_details",
              "SELECT interface FROM interface_details WHERE (flags & 256) > 0"),
    notes="Counters are the kernel's 64-bit totals (osquery reads 32-bit rtnl_link_stats, "
    "which wrap).",
)
