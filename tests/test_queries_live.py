"""Each shipped saved query against real data: processes, sockets and DNS in a
two-namespace lab with a real dnsmasq (tests/netlab.py). DNS queries run with
--capture while the lab's clients resolve and connect."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from tests.netlab import APP_V4, SERVER_V4, Lab, lab
from tests.test_queries import arrays

__all__ = ["lab"]  # the fixture

HERE = os.path.dirname(os.path.abspath(__file__))
DNSCLIENT = os.path.join(HERE, "dnsclient.py")

# Accepts connections on every address of its namespace and keeps them open.
ACCEPT = ("import socket, sys\n"
          "s = socket.create_server(('0.0.0.0', int(sys.argv[1])))\n"
          "conns = []\n"
          "while True:\n"
          "    conns.append(s.accept())\n")
# Connects to ADDR PORT, says so, and holds the connection.
CONNECT = ("import socket, sys, time\n"
           "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
           "print('connected', flush=True)\n"
           "time.sleep(60)\n")
# Binds a UDP socket and holds it; argv[1], when given, renames the process (comm) to
# argv[1] without its '+' signs (so the new name is not in the command line).
HOLD_UDP = ("import socket, sys, time\n"
            "if len(sys.argv) > 1:\n"
            "    open('/proc/self/comm', 'w').write(sys.argv[1].replace('+', ''))\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('127.0.0.1', 0))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")


def netsql(lab: Lab, *args: str) -> list[Any]:
    """netsql --json in the client namespace (no capture); its result arrays."""
    res = lab.run(lab.client, sys.executable, "-m", "netsql", "--json", *args)
    assert res.returncode == 0, res.stderr
    return arrays(res.stdout)


#: Captures run until the test has done what they must see, then end with Ctrl-C (which
#: ends the window early and still runs the statements): no fixed window to outlast.
WINDOW = 300


def finish(p: subprocess.Popen[str]) -> list[Any]:
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return arrays(out)


def serve(lab: Lab, port: int) -> subprocess.Popen[str]:
    p = lab.spawn(lab.server, sys.executable, "-c", ACCEPT, str(port))
    for _ in range(100):
        if f":{port} " in lab.run(lab.server, "ss", "-ltnH").stdout:
            return p
        time.sleep(0.05)
    raise RuntimeError(f"listener on {port} did not start")


def connect(lab: Lab, addr: str, port: int) -> subprocess.Popen[str]:
    p = lab.spawn(lab.client, sys.executable, "-c", CONNECT, addr, str(port),
                  stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == "connected"
    return p


def hold(lab: Lab, *cmd: str, **kw: object) -> subprocess.Popen[str]:
    p = lab.spawn(lab.client, *cmd, stdout=subprocess.PIPE, **kw)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def resolve(lab: Lab, *names: str) -> list[dict[str, Any]]:
    res = lab.resolve(*names)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def connect_by_name(lab: Lab, name: str, port: int) -> tuple[subprocess.Popen[str], int]:
    """dnsclient.py resolving ``name`` then holding a connection to its answer."""
    p = lab.spawn(lab.client, sys.executable, DNSCLIENT, "--connect", str(port), "--hold",
                  "30", f"{name}:A", stdout=subprocess.PIPE)
    assert p.stdout is not None
    pid = json.loads(p.stdout.readline())["pid"]
    assert json.loads(p.stdout.readline())["connected"]
    return p, pid


# -- DNS and processes -------------------------------------------------------------------


# Tests that need every query named use --hold (certain); passive attribution is
# counted in test_attribution.py.


def test_trace_domain(lab: Lab) -> None:
    serve(lab, 8443)
    p = lab.netsql_capture(WINDOW, "--hold", "--json", "-q", "trace-domain", "-p",
                           "domain=VMP.boldchat.com.")
    _, app = connect_by_name(lab, "vmp.boldchat.com", 8443)
    dig = lab.run(lab.client, "dig", "+short", "+tries=1", "vmp.boldchat.com")
    assert APP_V4 in dig.stdout
    resolve(lab, "www.example.test:A")  # another name: not traced
    [rows] = finish(p)
    assert sorted((r["relation"], r["process"] == "dig", r["pid"] == app) for r in rows) == [
        ("asked", False, True), ("asked", True, False), ("connected", False, True)], rows
    asked = [r for r in rows if r["relation"] == "asked" and r["pid"] == app]
    assert asked[0]["process"].startswith("python")
    assert (asked[0]["query"], asked[0]["address"], asked[0]["times"]) == (
        "vmp.boldchat.com", APP_V4, 1)
    assert 0 <= asked[0]["ago"] < 30 and asked[0]["username"] == "root"
    assert "dnsclient.py" in asked[0]["cmdline"]
    assert next(r for r in rows if r["process"] == "dig")["pid"] is not None
    [conn] = [r for r in rows if r["relation"] == "connected"]
    assert (conn["pid"], conn["query"], conn["address"], conn["port"], conn["state"],
            conn["times"]) == (app, "vmp.boldchat.com", APP_V4, 8443, "ESTABLISHED", 1)


def test_trace_domain_with_subdomains(lab: Lab) -> None:
    p = lab.netsql_capture(WINDOW, "--hold", "--json", "-q", "trace-domain", "-p",
                           "domain=badsite.test",
                           "-p", "subdomains=yes")
    pid = resolve(lab, "evil.badsite.test:A", "sub.evil.badsite.test:A",
                  "notbadsite.test:A")[0]["pid"]
    [rows] = finish(p)
    assert [(r["relation"], r["pid"], r["query"], r["times"]) for r in rows] == [
        ("asked", pid, "evil.badsite.test, sub.evil.badsite.test", 2)]


def test_dns_failures(lab: Lab) -> None:
    p = lab.netsql_capture(WINDOW, "--hold", "--json", "-q", "dns-failures", "-p", "min_failures=3")
    dga = [f"q{i}x7kz{i * 7919 % 1000}.example.test:A" for i in range(12)]
    bad = resolve(lab, *dga, "www.example.test:A")
    assert {r["rcode"] for r in bad[:-1]} == {"NXDOMAIN"}
    one = resolve(lab, "nosuch.example.test:A")  # one failure: under min_failures
    [by_process, by_name] = finish(p)
    assert [(r["pid"], r["failures"], r["names"], r["nxdomain"], r["queries"])
            for r in by_process] == [(bad[0]["pid"], 12, 12, 12, 13)]
    row = by_process[0]
    assert row["percent_failed"] == round(100 * 12 / 13, 1)
    assert len(row["sample"]) == 5 and row["process"].startswith("python")
    assert one[0]["pid"] not in [r["pid"] for r in by_name]
    assert sorted(r["query"] for r in by_name) == sorted(n.split(":")[0] for n in dga)
    assert {(r["rcode"], r["times"]) for r in by_name} == {("NXDOMAIN", 1)}


def test_dns_top(lab: Lab) -> None:
    p = lab.netsql_capture(WINDOW, "--hold", "--json", "-q", "dns-top", "-p", "limit=3", "-p",
                           "since=10 minutes")
    resolve(lab, "www.example.test:A", "www.example.test:A", "www.example.test:AAAA",
            "api.example.test:A", "vmp.boldchat.com:A", "nosuch.example.test:A")
    sources, servers, qtypes, rcodes, tlds, second, third = finish(p)
    assert [(r["source"], r["queries"], r["percent"]) for r in sources] == [
        ("10.77.0.2", 6, 100.0)]
    assert sources[0]["processes"].startswith("python")
    assert [(r["server"], r["queries"]) for r in servers] == [(SERVER_V4, 6)]
    assert [(r["qtype"], r["queries"], r["percent"]) for r in qtypes] == [
        ("A", 5, 83.3), ("AAAA", 1, 16.7)]
    assert [(r["rcode"], r["queries"]) for r in rcodes] == [("NOERROR", 5), ("NXDOMAIN", 1)]
    assert [(r["tld"], r["queries"]) for r in tlds] == [("test", 5), ("com", 1)]
    assert [(r["second_level"], r["queries"]) for r in second] == [
        ("example.test", 5), ("boldchat.com", 1)]
    assert [(r["third_level"], r["queries"]) for r in third] == [  # limit 3
        ("www.example.test", 3), ("api.example.test", 1), ("nosuch.example.test", 1)]


def test_dns_tunneling(lab: Lab) -> None:
    p = lab.netsql_capture(WINDOW, "--hold", "--json", "-q", "dns-tunneling", "-p", "min_names=20")
    chunks = [f"{i:02d}" + "6a6f686e2e646f65407061796c6f61642e6578616d706c65" for i in range(22)]
    tunnel = resolve(lab, *(f"{c}.t.evil.badsite.test:TXT" for c in chunks))
    resolve(lab, "www.example.test:A", "api.example.test:A")
    [rows] = finish(p)
    assert [r["domain"] for r in rows] == ["badsite.test"]
    row = rows[0]
    assert (row["names"], row["queries"], row["txt_null_any"], row["longest_label"]) == (
        22, 22, 22, 50)
    assert row["longest_name"] == 50 + len(".t.evil.badsite.test")
    assert row["pids"] == [tunnel[0]["pid"]]


def test_process_network(lab: Lab) -> None:
    serve(lab, 8443)
    waiting = lab.spawn(lab.client, "sh", "-c", f'read go; exec "{sys.executable}" '
                        f'"{DNSCLIENT}" --connect 8443 --hold 30 vmp.boldchat.com:A',
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    pid = waiting.pid  # ip netns exec and sh exec in place: the client keeps this pid
    p = lab.netsql_capture(WINDOW, "--hold", "--json", "-q", "process-network", "-p", f"pid={pid}")
    assert waiting.stdin is not None and waiting.stdout is not None
    waiting.stdin.write("go\n")
    waiting.stdin.flush()
    assert json.loads(waiting.stdout.readline())["pid"] == pid
    assert json.loads(waiting.stdout.readline())["connected"]
    [proc], net = finish(p)
    assert proc["pid"] == pid and proc["name"].startswith("python")
    assert proc["parent_name"] is not None and "dnsclient.py" in proc["cmdline"]
    kinds = {r["kind"]: r for r in net}
    assert len(net) == 2 and set(kinds) == {"connected", "dns"}, net
    assert (kinds["connected"]["remote"], kinds["connected"]["name"],
            kinds["connected"]["state"]) == (f"{APP_V4}:8443", "vmp.boldchat.com",
                                             "ESTABLISHED")
    assert (kinds["dns"]["name"], kinds["dns"]["answers"], kinds["dns"]["times"],
            kinds["dns"]["remote"]) == ("vmp.boldchat.com", APP_V4, 1, f"{SERVER_V4}:53")


# -- sockets ------------------------------------------------------------------------------


def test_connections(lab: Lab) -> None:
    serve(lab, 8443)
    p = lab.netsql_capture(WINDOW, "--json", "-q", "connections", "-p", "port=8443")
    _, app = connect_by_name(lab, "vmp.boldchat.com", 8443)
    [rows] = finish(p)
    mine = [r for r in rows if r["pid"] == app]
    assert [(r["protocol"], r["remote_address"], r["remote_port"], r["remote_host"],
             r["state"], r["username"]) for r in mine] == [
        ("tcp", APP_V4, 8443, "vmp.boldchat.com", "ESTABLISHED", "root")]
    assert all(r["remote_port"] == 8443 for r in rows)
    # The server's side is in the same table (its own namespace), by process name.
    rows = netsql(lab, "-q", "connections", "-p", "process=python%", "-p", "pid=" + str(app))
    assert [r["pid"] for r in rows[0]] == [app]


def test_listening(lab: Lab) -> None:
    code = ("import socket, time\n"
            "a = socket.create_server(('0.0.0.0', 7001))\n"
            "b = socket.create_server(('127.0.0.1', 7002))\n"
            "c = socket.create_server(('10.77.0.2', 7003))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    pid = hold(lab, sys.executable, "-c", code).pid
    [rows] = netsql(lab, "-q", "listening", "-p", "protocol=TCP")
    mine = {r["port"]: r for r in rows if r["pid"] == pid}
    assert {port: (r["address"], r["exposure"], r["wildcard"], r["username"])
            for port, r in mine.items()} == {
        7001: ("0.0.0.0", "every address", True, "root"),
        7002: ("127.0.0.1", "loopback", False, "root"),
        7003: ("10.77.0.2", "one address", False, "root")}
    assert all(r["protocol"] == "tcp" for r in rows)
    ports = [r["port"] for r in rows if r["pid"] == pid]
    assert ports == [7001, 7002, 7003]  # wildcard binds first
    [wild] = netsql(lab, "-q", "listening", "-p", "wildcard_only=true")
    assert all(r["wildcard"] for r in wild) and 7001 in [r["port"] for r in wild]


def test_direct_ip_connections(lab: Lab) -> None:
    serve(lab, 8443)
    p = lab.netsql_capture(WINDOW, "--json", "-q", "direct-ip-connections")
    _, by_name = connect_by_name(lab, "vmp.boldchat.com", 8443)
    direct = connect(lab, "10.77.0.12", 8443).pid  # no DNS lookup before it
    [rows] = finish(p)
    assert [(r["pid"], r["remote_address"], r["remote_port"]) for r in rows
            if r["pid"] in (by_name, direct)] == [(direct, "10.77.0.12", 8443)]
    rows = netsql(lab, "-q", "direct-ip-connections", "-p", "exclude_private=true")[0]
    assert direct not in [r["pid"] for r in rows]  # 10.77.0.12 is private


def test_suspicious_ports(lab: Lab) -> None:
    server = serve(lab, 4444)
    client = connect(lab, APP_V4, 4444)
    [rows] = netsql(lab, "-q", "suspicious-ports")
    listening = [r for r in rows if r["kind"] == "listening" and r["pid"] == server.pid]
    assert [(r["local_port"], r["protocol"]) for r in listening] == [(4444, "tcp")]
    out = [r for r in rows if r["pid"] == client.pid]
    assert [(r["kind"], r["remote_address"], r["remote_port"]) for r in out] == [
        ("connected", APP_V4, 4444)]
    # Only this lab's server namespace: other namespaces on the host may use port 4444.
    server_ns = os.stat(f"/run/netns/{lab.server}").st_ino
    inbound = [r for r in rows if r["kind"] == "connected" and r["local_port"] == 4444
               and r["net_namespace"] == server_ns]
    assert [r["pid"] for r in inbound] == [server.pid]  # the accepted side
    [none] = netsql(lab, "-q", "suspicious-ports", "-p", "ports=31337")
    assert all(server.pid != r["pid"] != client.pid for r in none)


def test_unusual_processes(lab: Lab) -> None:
    real = os.path.realpath(sys.executable)
    env = {"PYTHONHOME": sys.base_prefix, "PATH": os.environ.get("PATH", "")}
    os.makedirs(f"{lab.tmp}/bin")
    in_tmp = f"{lab.tmp}/bin/updater"
    shutil.copy(real, in_tmp)
    from_tmp = hold(lab, in_tmp, "-c", HOLD_UDP, env=env).pid
    gone = f"{lab.tmp}/bin/gone"
    shutil.copy(real, gone)
    deleted = hold(lab, gone, "-c", HOLD_UDP, env=env).pid
    os.unlink(gone)
    renamed = hold(lab, real, "-c", HOLD_UDP, "ss+hd").pid
    kthread = hold(lab, "bash", "-c", f'exec -a "[kworker/0:1]" "{real}" -c "$0"', HOLD_UDP,
                   env=env).pid
    plain = hold(lab, real, "-c", HOLD_UDP).pid
    [rows] = netsql(lab, "-q", "unusual-processes")
    reasons = {r["pid"]: r["reasons"] for r in rows}
    assert reasons[from_tmp] == "runs from /tmp/"
    assert reasons[deleted] == "executable deleted, runs from /tmp/"
    assert reasons[renamed] == "name does not match executable"
    assert reasons[kthread] == "looks like a kernel thread"
    assert plain not in reasons
    row = next(r for r in rows if r["pid"] == from_tmp)
    assert (row["name"], row["path"], row["sockets"]) == ("updater", in_tmp, 1)
    assert row["endpoints"][0].startswith("udp on 127.0.0.1:")
    [custom] = netsql(lab, "-q", "unusual-processes", "-p", "dirs=/nowhere/")
    assert from_tmp not in [r["pid"] for r in custom]


# -- routes -------------------------------------------------------------------------------


def test_routes_and_gateways(lab: Lab) -> None:
    dev = f"vc{lab.client[5:]}"
    for cmd in (["ip", "route", "add", "default", "via", SERVER_V4],
                ["ip", "route", "add", "192.0.2.0/24", "via", SERVER_V4, "metric", "5"],
                ["ip", "-6", "route", "add", "default", "via", "fd77::1", "metric", "2048"],
                ["ip", "-6", "route", "add", "default", "via", "fd77::1", "metric", "100",
                 "table", "100"]):
        res = lab.run(lab.client, *cmd)
        assert res.returncode == 0, res.stderr
    inode = os.stat(f"/run/netns/{lab.client}").st_ino
    [rows] = netsql(lab, "-q", "routes-and-gateways", "-p", f"netns={inode}")
    assert {(r["net_namespace"], r["netns_name"]) for r in rows} == {(inode, lab.client)}
    got = [(r["family"], r["destination"], r["is_default"], r["preferred"], r["gateway"],
            r["interface"], r["metric"], r["table"]) for r in rows]
    assert got == [
        ("ipv4", "0.0.0.0/0", True, True, SERVER_V4, dev, None, "main"),
        ("ipv6", "::/0", True, True, "fd77::1", dev, 100, "100"),
        ("ipv6", "::/0", True, True, "fd77::1", dev, 2048, "main"),
        ("ipv4", "192.0.2.0/24", False, False, SERVER_V4, dev, 5, "main"),
    ]
    assert {r["interface_state"] for r in rows} == {"UP"}
    [v6] = netsql(lab, "-q", "routes-and-gateways", "-p", "family=IPv6", "-p",
                  f"netns={inode}")
    assert {r["family"] for r in v6} == {"ipv6"} and len(v6) == 2
    [every] = netsql(lab, "-q", "routes-and-gateways")  # every namespace, the lab's too
    assert {r["net_namespace"] for r in every} > {inode}
