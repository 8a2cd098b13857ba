"""osquery's arp_cache, routes, interface tables and iptables inside a fresh network
namespace, against what `ip` and `iptables` set up there (netsql runs in it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import need, run_netsql

pytestmark = pytest.mark.privileged


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


def query(ns: str, sql: str) -> list[dict[str, Any]]:
    done = run_netsql("--format", "json", "-e", sql, netns=ns)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout or "[]"))


@pytest.fixture
def lab(netns: str) -> str:
    ip(netns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
    ip(netns, "link", "set", "d1", "up")
    ip(netns, "addr", "add", "10.9.8.1/24", "brd", "+", "dev", "d0")
    ip(netns, "addr", "add", "2001:db8:9::1/64", "dev", "d0")
    ip(netns, "link", "set", "d0", "up", "mtu", "1400")
    return netns


def test_arp_cache(lab: str) -> None:
    ip(lab, "neigh", "add", "10.9.8.7", "lladdr", "02:00:00:00:00:07", "dev", "d0",
       "nud", "permanent")
    ip(lab, "neigh", "add", "10.9.8.8", "lladdr", "02:00:00:00:00:08", "dev", "d0",
       "nud", "stale")
    ip(lab, "neigh", "add", "2001:db8:9::8", "lladdr", "02:00:00:00:00:09", "dev", "d0",
       "nud", "permanent")
    got = query(lab, "SELECT * FROM osquery.arp_cache ORDER BY address")
    assert got == [
        {"address": "10.9.8.7", "mac": "02:00:00:00:00:07", "interface": "d0",
         "permanent": "1"},
        {"address": "10.9.8.8", "mac": "02:00:00:00:00:08", "interface": "d0",
         "permanent": "0"},
    ]  # IPv4 only, as osquery


def test_routes(lab: str) -> None:
    ip(lab, "route", "add", "10.20.0.0/16", "via", "10.9.8.2", "dev", "d0", "mtu", "1300",
       "hoplimit", "7", "metric", "5")
    ip(lab, "route", "add", "10.30.0.5/32", "dev", "d0")
    ip(lab, "route", "add", "blackhole", "10.40.0.0/16")
    got = {(r["destination"], r["netmask"]): r for r in query(
        lab, "SELECT * FROM osquery.routes")}
    r = got[("10.20.0.0", 16)]
    assert (r["gateway"], r["interface"], r["mtu"], r["hopcount"], r["metric"],
            r["type"]) == ("10.9.8.2", "d0", 1300, 7, 5, "gateway")
    assert got[("10.30.0.5", 32)]["gateway"] is None  # osquery says netmask 0 here
    assert got[("10.40.0.0", 16)]["type"] == "other"
    assert got[("10.9.8.1", 32)]["type"] == "local"
    assert got[("10.9.8.255", 32)]["type"] == "broadcast"
    assert ("2001:db8:9::", 64) in got


def test_interface_addresses_and_details(lab: str) -> None:
    addrs = query(lab, "SELECT * FROM osquery.interface_addresses WHERE interface = 'd0' "
                       "AND address NOT LIKE 'fe80:%' ORDER BY address")
    assert addrs == [
        {"interface": "d0", "address": "10.9.8.1", "mask": "255.255.255.0",
         "broadcast": "10.9.8.255", "point_to_point": None, "type": "unknown"},
        {"interface": "d0", "address": "2001:db8:9::1", "mask": "ffff:ffff:ffff:ffff::",
         "broadcast": None, "point_to_point": None, "type": "unknown"},
    ]
    details = {r["interface"]: r for r in query(lab, "SELECT * FROM osquery.interface_details")}
    assert set(details) == {"lo", "d0", "d1"}
    d0, lo = details["d0"], details["lo"]
    assert (d0["type"], d0["mtu"], d0["flags"] & 0x1) == (1, 1400, 1)
    assert (lo["type"], lo["mac"], lo["flags"] & 0x8) == (772, "00:00:00:00:00:00", 8)


def test_iptables(lab: str) -> None:
    need(shutil.which("iptables") is not None, "needs iptables")
    subprocess.run(["ip", "netns", "exec", lab, "iptables", "-A", "INPUT", "-p", "tcp",
                    "-s", "10.0.0.0/8", "-i", "d0", "--dport", "22", "-j", "DROP"],
                   check=True)
    subprocess.run(["ip", "netns", "exec", lab, "iptables", "-P", "FORWARD", "DROP"],
                   check=True)
    got = query(lab, "SELECT * FROM osquery.iptables WHERE chain = 'INPUT'")
    assert len(got) == 1
    r = got[0]
    assert (r["filter_name"], r["policy"], r["target"], r["protocol"], r["dst_port"],
            r["src_ip"], r["src_mask"], r["iniface"], r["dst_ip"], r["match"],
            r["packets"]) == ("filter", "ACCEPT", "DROP", 6, "22", "10.0.0.0", "255.0.0.0",
                              "d0", "0.0.0.0", "tcp", 0)
