"""Joins of DNS to sockets and flows per network namespace (issue 13 item 4), for real.

Two look-alike sites, A and B: each a client namespace joined by a veth pair to a
server namespace of its own, with the same addresses on both sides (client 10.77.0.2,
resolver 10.77.0.1, application host 10.77.0.10). Each site's dnsmasq answers a
different name with the same address, and a client in each resolves its name and
stays connected to the answer. netsql captures in A. A socket's remote_host is the
name its own namespace resolved, never the other's; trace-domain and the README's
join name only the process of the namespace that asked; a capture file's answers
(no namespace) name the sockets of both, each with its namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from netsql.capture.manager import DnsCapture, PcapSource
from tests.conftest import need
from tests.dnsutil import udp_ip
from tests.netlab import capturing, sh, stop, wait_for
from tests.test_queries import arrays
from tests.test_queries_live import ACCEPT

ROOT = Path(__file__).resolve().parent.parent
DNSCLIENT = str(ROOT / "tests" / "dnsclient.py")
RESOLVER, CLIENT, APP = "10.77.0.1", "10.77.0.2", "10.77.0.10"
PORT = 8443
NAMES = {"a": "alpha.nsjoin.test", "b": "beta.nsjoin.test"}
README_JOIN = (ROOT / "README.md").read_text().split("```sql\n")[2].split(";\n```")[0]


@dataclass
class Site:
    client: str  # the client namespace's `ip netns` name
    server: str
    name: str  # what this site's dnsmasq answers with APP
    inode: int = 0  # the client namespace's inode (net_namespace)


@dataclass
class Sites:
    a: Site
    b: Site
    tmp: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self, ns: str, *cmd: str, **kw: Any) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], text=True, **kw)
        self.procs.append(p)
        return p

    def connect(self, site: Site) -> int:
        """A client in ``site`` resolving its name and holding a connection to the
        answer; returns its pid."""
        p = self.spawn(site.client, sys.executable, DNSCLIENT, "--connect", str(PORT),
                       "--hold", "60", f"{site.name}:A", stdout=subprocess.PIPE)
        assert p.stdout is not None
        first = json.loads(p.stdout.readline())
        assert first["answers"] == [APP], first
        assert json.loads(p.stdout.readline())["connected"]
        return int(first["pid"])


@pytest.fixture
def sites() -> Iterator[Sites]:
    need(os.geteuid() == 0 and shutil.which("ip") is not None, "needs root and iproute2")
    need(shutil.which("dnsmasq") is not None, "needs dnsmasq")
    tag = uuid.uuid4().hex[:6]
    tmp = f"/tmp/netsql-nsjoin-{tag}"
    os.makedirs(tmp)
    made: list[str] = []
    lab = Sites(Site(f"nsjoin-ac-{tag}", f"nsjoin-as-{tag}", NAMES["a"]),
                Site(f"nsjoin-bc-{tag}", f"nsjoin-bs-{tag}", NAMES["b"]), tmp)
    try:
        for x, site in (("a", lab.a), ("b", lab.b)):
            for ns in (site.client, site.server):
                sh("ip", "netns", "add", ns)
                made.append(ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            site.inode = os.stat(f"/run/netns/{site.client}").st_ino
            cdev, sdev = f"nj{x}c{tag}", f"nj{x}s{tag}"
            sh("ip", "link", "add", cdev, "netns", site.client, "type", "veth", "peer",
               "name", sdev, "netns", site.server)
            sh("ip", "-n", site.client, "addr", "add", f"{CLIENT}/24", "dev", cdev)
            for addr in (RESOLVER, APP):
                sh("ip", "-n", site.server, "addr", "add", f"{addr}/24", "dev", sdev)
            sh("ip", "-n", site.client, "link", "set", cdev, "up")
            sh("ip", "-n", site.server, "link", "set", sdev, "up")
            dns = lab.spawn(site.server, "dnsmasq", "--keep-in-foreground", "--no-resolv",
                            "--no-hosts", "--no-poll", "--bind-interfaces",
                            f"--listen-address={RESOLVER}", "--port=53",
                            f"--pid-file={tmp}/{x}.pid", "--local=/test/",
                            "--local-ttl=300", "--user=root", "--group=root",
                            f"--host-record={site.name},{APP}",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lab.spawn(site.server, sys.executable, "-c", ACCEPT, str(PORT))
            for addr, port in ((RESOLVER, 53), ("0.0.0.0", PORT)):
                assert wait_for(lambda s=site, a=addr, p=port: f"{a}:{p} " in subprocess.run(
                    ["ip", "netns", "exec", s.server, "ss", "-lntH"], capture_output=True,
                    text=True).stdout), f"nothing listens on {addr}:{port}"
            assert dns.poll() is None
        assert lab.a.inode != lab.b.inode
        yield lab
    finally:
        stop(lab.procs)
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def netsql_capture(lab: Sites, *args: str) -> subprocess.Popen[str]:
    """netsql in the root namespace capturing the two client namespaces (--netns: other
    tests' namespaces stay untouched) until SIGINT; returns once a packet socket is open
    and a hold rule is read in each."""
    limit = [a for site in (lab.a, lab.b) for a in ("--netns", site.client)]
    p = subprocess.Popen([sys.executable, "-m", "netsql", "--capture", "300", *limit,
                          "--hold", "--json", *args], text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=str(ROOT),
                         env=dict(os.environ, NETSQL_SOCKET=""))
    lab.procs.append(p)
    assert p.stderr is not None
    line = p.stderr.readline()
    assert line.startswith("netsql: capturing DNS"), line + p.stderr.read()
    for site in (lab.a, lab.b):
        assert wait_for(lambda s=site: capturing(p.pid, s.client)), site.client
        assert wait_for(lambda s=site: holding(s.client)), site.client
    return p


def _in(ns: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True,
                          text=True).stdout


def holding(ns: str) -> bool:
    """Whether netsql's hold rule in ``ns`` sends to a queue that a process reads."""
    rules = [r for r in _in(ns, "iptables", "-w", "-S", "OUTPUT").splitlines()
             if "netsql-hold" in r]
    queues = {line.split()[0] for line in _in(
        ns, "cat", "/proc/net/netfilter/nfnetlink_queue").splitlines() if line}
    return any(r.split("--queue-num ")[1].split()[0] in queues for r in rules)


def finish(p: subprocess.Popen[str]) -> list[Any]:
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return arrays(out)


SOCKETS = ("SELECT pid, net_namespace, remote_address, remote_port, remote_host "
           "FROM sockets WHERE remote_port = 8443 AND pid IS NOT NULL ORDER BY pid")
FLOWS = ("SELECT pid, net_namespace, remote_host FROM flows "
         "WHERE remote_port = 8443 AND pid IS NOT NULL ORDER BY pid")


def test_each_socket_takes_the_name_its_own_namespace_resolved(sites: Sites) -> None:
    a, b = sites.a, sites.b
    listed = Path(sites.tmp, "bad.txt")
    listed.write_text(f"{a.name}\n")
    db = f"{sites.tmp}/intel.duckdb"
    imported = subprocess.run(
        [sys.executable, "-m", "netsql", "intel", "import", str(listed), "--source", "nsjoin",
         "--format", "domains", "--intel-db", db], capture_output=True, text=True,
        timeout=60, cwd=str(ROOT))
    assert imported.returncode == 0, imported.stderr
    p = netsql_capture(sites, "--intel-db", db, "-e", SOCKETS, "-e", FLOWS,
                       "-e", "SELECT DISTINCT net_namespace, query, answers "
                       "FROM dns_queries WHERE rcode = 'NOERROR' ORDER BY query",
                       "-q", "trace-domain", "-p", f"domain={a.name}",
                       "-e", README_JOIN.replace("vmp.boldchat.com", b.name),
                       "-e", "SELECT DISTINCT seen_in, pid, net_namespace, name FROM flagged "
                       "ORDER BY seen_in")
    in_a = sites.connect(a)
    in_b = sites.connect(b)  # same addresses, the other site's name
    socks, flows, dns, trace, joined, flagged = finish(p)
    # One capture saw both sites' answers: the same address, each in its namespace.
    assert [(r["net_namespace"], r["query"], r["answers"]) for r in dns] == [
        (a.inode, a.name, [APP]), (b.inode, b.name, [APP])], dns
    assert {(r["pid"], r["net_namespace"], r["remote_address"], r["remote_host"])
            for r in socks if r["pid"] in (in_a, in_b)} == {
        (in_a, a.inode, APP, a.name), (in_b, b.inode, APP, b.name)}, socks
    assert {(r["pid"], r["net_namespace"], r["remote_host"]) for r in flows
            if r["pid"] in (in_a, in_b)} == {
        (in_a, a.inode, a.name), (in_b, b.inode, b.name)}, flows
    # trace-domain for A's name: A's process asked and is connected; B's is neither,
    # though it is connected to the same address.
    assert {(r["relation"], r["pid"], r["net_namespace"]) for r in trace} == {
        ("asked", in_a, a.inode), ("connected", in_a, a.inode)}, trace
    assert all(r["container"] is None for r in trace)  # the sites are not containers
    # The README's join, as written there, for B's name: B's process only.
    assert [(r["pid"], r["net_namespace"], r["query"], r["lookups"]) for r in joined] == [
        (in_b, b.inode, b.name, 1)], joined
    # flagged: A's query and A's socket hit the list; B's socket, to the same address,
    # does not (its name is B's own).
    assert [(r["seen_in"], r["pid"], r["net_namespace"], r["name"]) for r in flagged
            if r["pid"] in (in_a, in_b)] == [("dns_queries", in_a, a.inode, a.name),
                                             ("sockets", in_a, a.inode, a.name)], flagged


def test_a_namespace_not_captured_names_nothing(sites: Sites) -> None:
    """netsql inside A capturing A alone: B's socket to the same address gets no name
    (not A's)."""
    a, b = sites.a, sites.b
    p = sites.spawn(a.client, sys.executable, "-m", "netsql", "--capture", "300",
                    "--netns", a.client, "--json", "-e", SOCKETS, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, cwd=str(ROOT),
                    env=dict(os.environ, NETSQL_SOCKET=""))
    assert p.stderr is not None
    line = p.stderr.readline()
    assert line.startswith("netsql: capturing DNS"), line + p.stderr.read()
    assert wait_for(lambda: capturing(p.pid, a.client))
    in_a = sites.connect(a)
    in_b = sites.connect(b)
    [socks] = finish(p)
    assert {(r["pid"], r["remote_host"]) for r in socks if r["pid"] in (in_a, in_b)} == {
        (in_a, a.name), (in_b, None)}, socks


def test_a_capture_files_answers_name_sockets_of_every_namespace(sites: Sites) -> None:
    """A file records no namespace (dns_queries.net_namespace NULL): its answers match
    sockets of any namespace, and each row says which namespace it is."""
    a, b = sites.a, sites.b
    pcap = f"{sites.tmp}/a.pcap"
    dump = sites.spawn(a.client, "tcpdump", "-U", "-n", "-i", "any", "-w", pcap,
                       "udp port 53", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert dump.stderr is not None
    started = [dump.stderr.readline() for _ in range(2)]  # (a link type line first)
    assert any("listening on" in line for line in started), started
    in_a = sites.connect(a)
    in_b = sites.connect(b)
    assert wait_for(lambda: _answers_in(pcap)), "tcpdump wrote no DNS response"
    dump.send_signal(signal.SIGINT)
    dump.wait(timeout=10)
    res = subprocess.run(
        [sys.executable, "-m", "netsql", "--pcap", pcap, "--json", "-e",
         "SELECT DISTINCT net_namespace, query FROM dns_queries",
         "-e", SOCKETS, "-q", "trace-domain", "-p", f"domain={a.name}"],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
        env=dict(os.environ, NETSQL_SOCKET=""))
    assert res.returncode == 0, res.stderr
    dns, socks, trace = arrays(res.stdout)
    assert dns == [{"net_namespace": None, "query": a.name}]
    assert {(r["pid"], r["net_namespace"], r["remote_host"]) for r in socks
            if r["pid"] in (in_a, in_b)} == {(in_a, a.inode, a.name),
                                             (in_b, b.inode, a.name)}, socks
    assert {(r["relation"], r["pid"], r["net_namespace"]) for r in trace} >= {
        ("asked", None, None), ("connected", in_a, a.inode),
        ("connected", in_b, b.inode)}, trace


def _answers_in(pcap: str) -> bool:
    try:
        return bool(PcapSource([pcap]).name_for(APP))
    except Exception:  # the file is still being written: not whole yet
        return False


# -- the lookup API, on a real answer's bytes ----------------------------------------------


def test_tracker_names_an_address_per_namespace() -> None:
    """Two namespaces' answers for one address (same client, resolver, port and id in
    both): each namespace gets its own row and its own name, never the other's."""
    import dns.message
    import dns.rrset

    cap = DnsCapture()
    now = time.time()
    for ns, name in ((1, "alpha.nsjoin.test"), (2, "beta.nsjoin.test")):
        q = dns.message.make_query(name, "A", id=7)
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "A", APP))
        for msg, src, dst, sport, dport in ((q, CLIENT, RESOLVER, 40000, 53),
                                            (r, RESOLVER, CLIENT, 53, 40000)):
            cap.packet(now, udp_ip(src, dst, sport, dport, msg.to_wire()), "veth",
                       local=False, ns=ns)
    tracker = cap.tracker
    rows = sorted((r.net_namespace, r.query, r.status) for r in tracker.snapshot())
    assert rows == [(1, "alpha.nsjoin.test", "answered"),
                    (2, "beta.nsjoin.test", "answered")]
    assert tracker.name_for(APP, 1, now) == "alpha.nsjoin.test"
    assert tracker.name_for(APP, 2, now) == "beta.nsjoin.test"
    assert tracker.name_for(APP, 3, now) is None  # a namespace that asked nothing
    assert tracker.name_for(APP, 1, now + 301) is None  # past its TTL
    cols, _ = tracker.columns(frozenset({"net_namespace", "query"}))
    assert sorted(zip(cols["net_namespace"], cols["query"], strict=True)) == [
        (1, "alpha.nsjoin.test"), (2, "beta.nsjoin.test")]


# -- the recorded history ------------------------------------------------------------------


def test_new_destinations_judges_a_private_address_per_namespace(tmp_path: Path) -> None:
    """A private address names a machine only within its namespace: seen before in
    another namespace, it is still new; a public one seen in any namespace is not.
    (Days of recorded history, which a test cannot wait for, written as the recorder
    writes them.)"""
    from netsql.history.store import Store
    from netsql.history.tables import CONNECTIONS
    from tests.conftest import run_netsql

    now = time.time()
    rows = [  # (first_seen, namespace, remote address, port, remote_host)
        (now - 2 * 86400, 1, "10.0.0.5", 5432, "db.a.internal"),
        (now - 2 * 86400, 1, "203.0.113.9", 443, "cdn.example.test"),
        (now - 3600, 1, "10.0.0.5", 5432, "db.a.internal"),  # seen before, same ns
        (now - 3600, 2, "203.0.113.9", 443, "cdn.example.test"),  # public: seen before
        (now - 3600, 2, "10.0.0.5", 5432, "vmp.boldchat.com"),  # another machine
    ]
    cols: dict[str, list[object]] = {
        "first_seen": [r[0] for r in rows], "last_seen": [r[0] + 60 for r in rows],
        "net_namespace": [r[1] for r in rows], "inode": list(range(1, len(rows) + 1)),
        "pid": [100 + r[1] for r in rows], "process": ["app"] * len(rows),
        "protocol": ["tcp"] * len(rows), "remote_address": [r[2] for r in rows],
        "remote_port": [r[3] for r in rows], "remote_host": [r[4] for r in rows]}
    Store(tmp_path, host="h1").write(CONNECTIONS, cols, now=now)
    res = run_netsql("--history", str(tmp_path), "--json", "-q", "new-destinations")
    assert res.returncode == 0, res.stderr
    [new] = arrays(res.stdout)
    assert [(r["net_namespace"], r["remote_address"], r["remote_port"], r["remote_host"])
            for r in new] == [(2, "10.0.0.5", 5432, "vmp.boldchat.com")], new
