"""The native backend: Linux's /proc and netlink, read directly (faster than psutil,
and the only source of the Linux-only columns: inodes, namespaces, queues)."""

from __future__ import annotations

from functools import partial
from typing import Any

from netsql import procfs
from netsql.backends import linux_procs, linux_sockets
from netsql.backends.base import IFF_UP, Backend, link_flags
from netsql.collect import Collection, Need
from netsql.schema import Columns


class LinuxBackend(Backend):
    name = "native"

    def processes(self, coll: Collection, need: Need) -> Columns:
        return linux_procs.processes(coll, need)

    def sockets(self, coll: Collection, need: Need) -> Columns:
        return linux_sockets.sockets(coll, need)

    def attach_owners(self, coll: Collection, cols: Columns, need: Need) -> None:
        linux_sockets.attach_owners(coll, cols, need)

    def interfaces(self, coll: Collection, need: Need) -> Columns:
        """Links (and addresses, when wanted) of every namespace, over rtnetlink."""
        want = need.wants("addresses")
        key = "interfaces" if want else "interfaces:noaddr"
        return dict(coll.once(key, lambda: procfs.each_namespace(
            coll, NAMES, partial(_links, want))))


# ARPHRD_* link types as iproute2 names them (lib/ll_types.c); others show as a number.
LINK_TYPES = {1: "ether", 24: "ieee1394", 32: "infiniband", 256: "slip", 280: "can",
              512: "ppp", 519: "rawip", 768: "ipip", 769: "tunnel6", 772: "loopback",
              776: "sit", 778: "gre", 801: "ieee80211", 803: "ieee80211_radiotap",
              804: "ieee802154", 823: "ip6gre", 824: "netlink", 825: "6lowpan",
              826: "vsockmon", 65534: "none", 65535: "void"}
STATS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors",
         "rx_dropped", "tx_dropped")
NAMES = ("name", "index", "mac", "mtu", "is_up", "oper_state", "type", "link_type", "flags",
         "master", "addresses", *STATS, "net_namespace")


def _kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _links(want_addresses: bool, ns: int) -> Columns:
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
