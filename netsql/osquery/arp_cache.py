"""osquery.arp_cache: the IPv4 neighbour cache (/proc/net/arp) of this namespace."""

from __future__ import annotations

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

ATF_COM, ATF_PERM = 0x2, 0x4


def collect(coll: Collection, need: Need) -> Columns:
    cols: Columns = {"address": [], "mac": [], "interface": [], "permanent": []}
    # IP address  HW type  Flags  HW address  Mask  Device
    for line in (procfs.read_text("/proc/net/arp") or "").splitlines()[1:]:
        f = line.split()
        if len(f) < 6:
            continue
        flags = int(f[2], 16)
        cols["address"].append(f[0])
        cols["mac"].append(f[3])
        cols["interface"].append(f[5])
        cols["permanent"].append("1" if flags == ATF_COM | ATF_PERM else "0")
    return cols


TABLE = table(
    "arp_cache",
    "Address resolution cache, both static and dynamic (from ARP, NDP) (osquery's "
    "arp_cache: IPv4 only, the current network namespace).",
    [
        col("address", "TEXT", "IPv4 address target"),
        col("mac", "TEXT", "MAC address of broadcasted address ('00:00:00:00:00:00' "
            "while unresolved)"),
        col("interface", "TEXT", "Interface of the network for the MAC"),
        col("permanent", "TEXT", "'1' for a permanent (static) entry, else '0'"),
    ],
    collect,
    examples=("SELECT address, mac, interface FROM arp_cache WHERE permanent = '0'",),
    notes="Reads /proc/net/arp like osquery: IPv6 neighbours (NDP) are not included.",
)
