"""routes and interfaces tables: compared with iproute2 inside a fresh network namespace.

The collectors run in a subprocess under ``ip netns exec`` (they read the namespace
they run in); every route and interface ``ip -j`` reports must appear, and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.load import load
from netsql.schema import Columns, Table
from netsql.tables import interfaces, routes

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

COLLECT = (
    "import json, sys\n"
    "from importlib import import_module\n"
    "from netsql.collect import Collection, Need\n"
    "mod = import_module('netsql.tables.' + sys.argv[1])\n"
    "print(json.dumps(mod.collect(Collection(), Need())))\n"
)

SEND = (
    "import socket, sys\n"
    "n, size = int(sys.argv[1]), int(sys.argv[2])\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'va')\n"
    "lo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(n):\n"
    "    s.sendto(b'x' * size, ('10.9.0.99', 9))\n"
    "    lo.sendto(b'x' * size, ('127.0.0.1', 9))\n"
)


def in_ns(ns: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=60).stdout


def ip(ns: str, *args: str, check: bool = True) -> bool:
    return subprocess.run(["ip", "-n", ns, *args], check=check,
                          capture_output=True).returncode == 0


def ip_json(ns: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out or "[]")


def collect_in(ns: str, table: str) -> Columns:
    """The table's rows of namespace ``ns`` (collected from inside it: the rows of the
    other namespaces it also holds are left out here, see test_every_namespace)."""
    cols = json.loads(in_ns(ns, sys.executable, "-c", COLLECT, table))
    keep = [i for i, n in enumerate(cols["net_namespace"]) if n == ns_inode(ns)]
    return {k: [v[i] for i in keep] for k, v in cols.items()}


def as_rows(table: Table, cols: Columns) -> list[dict[str, Any]]:
    assert list(cols) == table.column_names
    assert len({len(v) for v in cols.values()}) == 1, "column lists differ in length"
    return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def ns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


@pytest.fixture
def lab(netns: str) -> Iterator[str]:
    """The namespace with two veth pairs, a bridge, a tun device, addresses and routes."""
    ns = netns
    for conf in ("all", "default"):  # no DAD: addresses and their routes appear at once
        in_ns(ns, sys.executable, "-c",
              f"open('/proc/sys/net/ipv6/conf/{conf}/accept_dad', 'w').write('0')")
    ip(ns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
    ip(ns, "link", "add", "vc", "mtu", "1400", "type", "veth", "peer", "name", "vd")
    if ip(ns, "link", "add", "br0", "type", "bridge", check=False):
        ip(ns, "link", "set", "vd", "master", "br0")
    ip(ns, "tuntap", "add", "tp0", "mode", "tun", check=False)
    for dev, v4, v6 in (("va", "10.9.0.1/24", "fd42::1/64"), ("vb", "10.9.0.2/24", "fd42::2/64"),
                        ("vc", "10.77.0.1/16", "fd77:1::1/64")):
        ip(ns, "addr", "add", v4, "dev", dev)
        ip(ns, "addr", "add", v6, "dev", dev, "nodad")
    for dev in ("va", "vb", "vc", "vd"):
        ip(ns, "link", "set", dev, "up")
    for route in (
        "default via 10.9.0.254 dev va",
        "10.20.0.0/16 via 10.9.0.254 metric 50",
        "10.30.0.0/24 via 10.9.0.254 table 100",
        "unreachable 10.67.0.0/16 table 100",
        "blackhole 10.66.0.0/16",
        "prohibit 10.68.0.0/16",
        "10.40.0.0/24 nexthop via 10.9.0.253 dev va weight 2 nexthop via 10.77.0.254 dev vc",
        "10.50.0.0/24 via inet6 fd42::fe dev va",
        "10.60.0.0/24 dev vc proto static src 10.77.0.1 table 200",
        "10.70.0.0/24 via 10.1.1.1 dev va onlink",
        "-6 default via fd42::fe",
        "-6 fd99::/48 via fd42::fe metric 333",
        "-6 blackhole fd66::/48",
        "-6 fd77::/64 nexthop via fd42::fd dev va nexthop via fd42::fc dev vb weight 3",
        "-6 fd55::/64 dev vc proto 99 metric 7 table 7000",
    ):
        args = route.split()
        pre = args[:1] if args[0] == "-6" else []
        ip(ns, *pre, "route", "add", *args[len(pre):])
    settle(ns)
    yield ns


def settle(ns: str, timeout: float = 10) -> None:
    """Wait until the veths have carrier and their link-local addresses are final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        links = ip_json(ns, "addr")
        veths = [x for x in links if x["ifname"] in ("va", "vb", "vc", "vd")]
        if all(x["operstate"] == "UP" and any(
                a["local"].startswith("fe80:") and not a.get("tentative")
                for a in x.get("addr_info", [])) for x in veths):
            return
        time.sleep(0.1)
    pytest.fail("veth interfaces did not come up")


def steady(ns: str, table: str, take: Any) -> tuple[Any, Columns]:
    """iproute2's view and ours, taken while iproute2's view did not change."""
    for _ in range(5):
        before = take(ns)
        ours = collect_in(ns, table)
        if take(ns) == before:
            return before, ours
        time.sleep(0.5)
    pytest.fail("iproute2's output kept changing")


# --- routes -------------------------------------------------------------------------


def ip_routes(ns: str) -> list[tuple[Any, ...]]:
    """`ip -d -j route show table all` for both families, one tuple per next hop."""
    out = []
    for fam, opt, zero, host in (("ipv4", "-4", "0.0.0.0/0", "/32"),
                                 ("ipv6", "-6", "::/0", "/128")):
        for r in ip_json(ns, "-d", opt, "route", "show", "table", "all"):
            dst = zero if r["dst"] == "default" else r["dst"]
            dst = dst if "/" in dst else dst + host
            for h in r.get("nexthops") or [r]:
                gw = h.get("gateway") or h.get("via", {}).get("host")
                flags = tuple(sorted({*r.get("flags", []), *h.get("flags", [])}))
                out.append((dst, gw, h.get("dev"), r.get("metric"), r.get("prefsrc"),
                            r.get("protocol", "boot"), r.get("type", "unicast"),
                            r.get("scope", "global"), r.get("table", "main"), fam, flags,
                            h.get("weight") if "nexthops" in r else None))
    return out


def our_route(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["destination"], r["gateway"], r["interface"], r["metric"], r["source"],
            r["protocol"], r["type"], r["scope"], r["table"], r["family"],
            tuple(sorted(r["flags"])), r["weight"])


@pytest.mark.privileged
def test_routes_match_iproute2(lab: str) -> None:
    theirs, cols = steady(lab, "routes", ip_routes)
    rows = as_rows(routes.TABLE, cols)
    assert Counter(map(our_route, rows)) == Counter(theirs)
    assert len(rows) == len(theirs)
    assert {r["net_namespace"] for r in rows} == {ns_inode(lab)}

    def find(dst: str, **kw: Any) -> list[dict[str, Any]]:
        return [r for r in rows if r["destination"] == dst
                and all(r[k] == v for k, v in kw.items())]

    assert find("0.0.0.0/0", gateway="10.9.0.254", interface="va", table="main",
                family="ipv4", type="unicast", protocol="boot", metric=None)
    assert find("::/0", gateway="fd42::fe", interface="va", metric=1024, family="ipv6")
    assert find("10.20.0.0/16", gateway="10.9.0.254", metric=50)
    assert find("10.30.0.0/24", table="100", gateway="10.9.0.254")
    assert find("10.67.0.0/16", table="100", type="unreachable", interface=None)
    assert find("10.66.0.0/16", type="blackhole", gateway=None, interface=None)
    assert find("10.68.0.0/16", type="prohibit")
    assert find("fd66::/48", type="blackhole", family="ipv6")
    assert find("fd99::/48", gateway="fd42::fe", metric=333, family="ipv6")
    assert find("10.50.0.0/24", gateway="fd42::fe", family="ipv4")
    assert find("10.60.0.0/24", table="200", protocol="static", source="10.77.0.1",
                scope="link", gateway=None)
    assert find("10.70.0.0/24", flags=["onlink"])
    assert find("fd55::/64", table="7000", metric=7)[0]["protocol"] in ("openr", "99")
    assert find("10.9.0.1/32", type="local", table="local", scope="host")
    assert find("10.9.0.255/32", type="broadcast", table="local", interface="va")
    assert find("ff00::/8", type="multicast", table="local", interface="va")
    assert {(r["gateway"], r["interface"], r["weight"]) for r in find("10.40.0.0/24")} == {
        ("10.9.0.253", "va", 2), ("10.77.0.254", "vc", 1)}
    assert {(r["gateway"], r["weight"]) for r in find("fd77::/64")} == {
        ("fd42::fd", 1), ("fd42::fc", 3)}


# --- interfaces ---------------------------------------------------------------------


def ip_links(ns: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return ip_json(ns, "-d", "link"), ip_json(ns, "addr")


@pytest.mark.privileged
def test_interfaces_match_iproute2(lab: str) -> None:
    (links, addrs), cols = steady(lab, "interfaces", ip_links)
    rows = {r["name"]: r for r in as_rows(interfaces.TABLE, cols)}
    assert set(rows) == {x["ifname"] for x in links}
    assert len(rows) == len(links)
    for x in links:
        r = rows[x["ifname"]]
        kind = x.get("linkinfo", {}).get("info_kind")
        assert r["index"] == x["ifindex"]
        assert r["mtu"] == x["mtu"]
        assert r["mac"] == x.get("address")
        assert r["is_up"] == ("UP" in x["flags"])
        assert r["flags"] == x["flags"]
        assert r["oper_state"] == x["operstate"]
        assert r["link_type"] == x["link_type"]
        assert r["type"] == (kind or x["link_type"])
        assert r["master"] == x.get("master")
        assert r["net_namespace"] == ns_inode(lab)
    for x in addrs:
        want = [f"{a['local']}/{a['prefixlen']}" for a in x.get("addr_info", [])]
        assert rows[x["ifname"]]["addresses"] == want
    lo, va, vc = rows["lo"], rows["va"], rows["vc"]
    assert (lo["type"], lo["mac"], lo["addresses"]) == (
        "loopback", "00:00:00:00:00:00", ["127.0.0.1/8", "::1/128"])
    assert va["type"] == "veth" and va["is_up"] and va["oper_state"] == "UP"
    assert va["addresses"][:2] == ["10.9.0.1/24", "fd42::1/64"]
    assert vc["mtu"] == 1400 and vc["addresses"][0] == "10.77.0.1/16"
    assert len(va["mac"]) == 17 and va["mac"] == va["mac"].lower()
    if "br0" in rows:
        assert rows["vd"]["master"] == "br0" and rows["br0"]["type"] == "bridge"
        assert not rows["br0"]["is_up"]
    if "tp0" in rows:
        assert rows["tp0"]["mac"] is None and rows["tp0"]["type"] == "tun"


def stats(ns: str) -> dict[str, dict[str, int]]:
    out = {}
    for x in ip_json(ns, "-s", "link"):
        s = x["stats64"]
        out[x["ifname"]] = {f"{d}_{k}": s[d][k] for d in ("rx", "tx")
                            for k in ("bytes", "packets", "errors", "dropped")}
    return out


@pytest.mark.privileged
def test_interface_counters_follow_traffic(lab: str) -> None:
    vb_mac = next(x["address"] for x in ip_json(lab, "link") if x["ifname"] == "vb")
    # 10.9.0.99 is nobody: a permanent neighbour entry sends its packets to vb's MAC,
    # so every datagram leaves va and arrives on vb (where it is dropped, not answered).
    ip(lab, "neigh", "add", "10.9.0.99", "lladdr", vb_mac, "dev", "va", "nud", "permanent")
    n, size = 25, 200
    before = stats(lab)
    in_ns(lab, sys.executable, "-c", SEND, str(n), str(size))
    cols = collect_in(lab, "interfaces")
    after = stats(lab)
    rows = {r["name"]: r for r in as_rows(interfaces.TABLE, cols)}
    assert set(rows) == set(before) == set(after)
    for name, r in rows.items():
        for k, v in before[name].items():
            assert v <= r[k] <= after[name][k], (name, k)
    frame = size + 8 + 20 + 14  # UDP, IPv4 and Ethernet headers
    assert rows["va"]["tx_packets"] - before["va"]["tx_packets"] >= n
    assert rows["va"]["tx_bytes"] - before["va"]["tx_bytes"] >= n * frame
    assert rows["vb"]["rx_packets"] - before["vb"]["rx_packets"] >= n
    assert rows["vb"]["rx_bytes"] - before["vb"]["rx_bytes"] >= n * frame
    assert rows["lo"]["rx_packets"] - before["lo"]["rx_packets"] >= n
    assert rows["lo"]["tx_packets"] == rows["lo"]["rx_packets"]  # loopback: tx is rx
    assert rows["va"]["tx_errors"] == rows["vb"]["rx_errors"] == 0


# --- host namespace, no root needed --------------------------------------------------


def test_host_loopback_and_local_routes() -> None:
    own = procfs.own_netns()
    ifs = {r["name"]: r for r in as_rows(interfaces.TABLE,
                                          interfaces.collect(Collection(), Need()))
           if r["net_namespace"] == own}
    lo = ifs["lo"]
    assert "127.0.0.1/8" in lo["addresses"]
    assert lo["type"] == lo["link_type"] == "loopback" and lo["is_up"]
    assert lo["index"] == 1 and lo["net_namespace"] == procfs.own_netns()
    rts = [r for r in as_rows(routes.TABLE, routes.collect(Collection(), Need()))
           if r["net_namespace"] == own]
    assert any(r["destination"] == "127.0.0.1/32" and r["type"] == "local"
               and r["table"] == "local" and r["interface"] == "lo" for r in rts)
    assert {r["family"] for r in rts} <= {"ipv4", "ipv6"}


def test_interfaces_skip_addresses_when_not_needed() -> None:
    cols = interfaces.collect(Collection(), Need(frozenset({"name", "mtu"})))
    assert "lo" in cols["name"]
    assert set(cols["addresses"]) == {None}


def test_examples_and_keyword_columns_run_in_duckdb() -> None:
    con = duckdb.connect()
    for table in (routes.TABLE, interfaces.TABLE):
        con.execute(table.ddl())
        data = table.collect(Collection(), Need())
        assert load(con, table, data) == len(data["name" if table is interfaces.TABLE
                                                    else "destination"])
    for table in (routes.TABLE, interfaces.TABLE):
        assert table.examples
        for sql in table.examples:
            con.execute(sql).fetchall()
    own = f"net_namespace = {procfs.own_netns()}"
    assert con.execute(f"SELECT name, index FROM interfaces WHERE index = 1 AND {own}"
                       ).fetchall() == [("lo", 1)]
    assert con.execute(f'SELECT "index" FROM interfaces WHERE name = \'lo\' AND {own}'
                       ).fetchall() == [(1,)]
    assert ("lo",) in con.execute(
        "SELECT name FROM interfaces WHERE list_contains(addresses, '127.0.0.1/8')").fetchall()
    assert con.execute("SELECT count(*) FROM routes r WHERE r.table = 'local'").fetchall()[0][0] > 0


def test_modules_do_not_import_pyroute2() -> None:
    code = ("import sys, netsql.tables.routes, netsql.tables.interfaces\n"
            "print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=ENV, cwd=ROOT, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.privileged
def test_every_namespace_from_the_root(lab: str) -> None:
    """Collected from netsql's own namespace: the lab's interfaces and routes (a
    namespace no process is in, entered through its /run/netns entry) come with its
    inode, beside the root namespace's own."""
    lab_ns = ns_inode(lab)
    (links, _addrs), _ = steady(lab, "interfaces", ip_links)
    rows = as_rows(interfaces.TABLE, interfaces.collect(Collection(), Need()))
    assert {r["name"] for r in rows if r["net_namespace"] == lab_ns} == {
        link["ifname"] for link in ip_json(lab, "link")}
    assert any(r["net_namespace"] == procfs.own_netns() and r["name"] == "lo" for r in rows)
    theirs = ip_routes(lab)
    rts = as_rows(routes.TABLE, routes.collect(Collection(), Need()))
    assert Counter(our_route(r) for r in rts if r["net_namespace"] == lab_ns) == Counter(
        theirs)
    assert any(r["net_namespace"] == procfs.own_netns() for r in rts)
