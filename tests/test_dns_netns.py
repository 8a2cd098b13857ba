"""Live DNS capture in every network namespace, run from the root namespace: two lab
namespaces with the same addresses, each with its own dnsmasq answering a different
name with the same address, and a long-lived and a short-lived client in each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import need
from tests.netlab import capturing, stop, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = "10.88.0.1"  # the same in every lab namespace
ANSWER = "10.88.0.50"  # what each namespace's own name resolves to
NAMES = ("alpha", "beta")
LONG_CLIENT = """
import json, os, socket, sys, time
import dns.message
server, name = sys.argv[1:3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((server, 53))
s.send(dns.message.make_query(name, "A").to_wire())
r = dns.message.from_wire(s.recv(4096))
print(json.dumps({"pid": os.getpid(), "answers": [rd.to_text() for rr in r.answer for rd in rr]}),
      flush=True)
time.sleep(60)
"""


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)


def inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


@dataclass
class Spaces:
    tag: str
    names: list[str] = field(default_factory=list)  # ip netns names
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def add(self, suffix: str, answer_name: str) -> str:
        """A namespace with SERVER on an interface of its own (a veth pair) and a dnsmasq there that
        answers ``answer_name`` with ANSWER."""
        ns = f"nscap-{self.tag}-{suffix}"
        self.names.append(ns)
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
        sh("ip", "-n", ns, "addr", "add", f"{SERVER}/24", "dev", "d0")
        sh("ip", "-n", ns, "link", "set", "d0", "up")
        dm = self.spawn(ns, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                        "--no-poll", "--bind-interfaces", f"--listen-address={SERVER}",
                        "--port=53", f"--pid-file=/tmp/{ns}.pid", "--local=/test/",
                        f"--host-record={answer_name},{ANSWER}", "--user=root",
                        "--group=root", stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
        assert wait_for(lambda: dm.poll() is not None or f"{SERVER}:53" in sh(
            "ip", "netns", "exec", ns, "ss", "-lnuH").stdout), "dnsmasq did not start"
        assert dm.poll() is None, "dnsmasq exited"
        return ns

    def spawn(self, ns: str, *cmd: str, **kw: Any) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], text=True, **kw)
        self.procs.append(p)
        return p

    def dig(self, ns: str, name: str) -> str:
        """A short-lived client: dig, which exits right after its answer."""
        return sh("ip", "netns", "exec", ns, "dig", "+short", "+tries=1", "+time=2",
                  f"@{SERVER}", name).stdout.strip()

    def long_client(self, ns: str, name: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        """A long-lived client: resolves, prints what it got, then stays alive with its
        socket open (as a resolver library that keeps its socket)."""
        p = self.spawn(ns, sys.executable, "-c", LONG_CLIENT, SERVER, name,
                       stdout=subprocess.PIPE)
        assert p.stdout is not None
        return p, json.loads(p.stdout.readline())

    def netsql(self, *args: str) -> subprocess.Popen[str]:
        """netsql in the ROOT namespace; returns once its capture has opened."""
        p = subprocess.Popen([sys.executable, "-m", "netsql", *args], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        assert p.stderr is not None
        line = p.stderr.readline()
        assert line.startswith("netsql: capturing DNS"), line + p.stderr.read()
        return p


@pytest.fixture
def spaces() -> Iterator[Spaces]:
    need(os.geteuid() == 0 and shutil.which("ip") is not None, "needs root and iproute2")
    need(shutil.which("dnsmasq") is not None and shutil.which("dig") is not None,
         "needs dnsmasq and dig")
    s = Spaces(uuid.uuid4().hex[:6])
    try:
        yield s
    finally:
        stop(s.procs, timeout=10)
        for ns in s.names:
            sh("ip", "netns", "del", ns, check=False)


def hold_rules(ns: str) -> list[str]:
    out = sh("ip", "netns", "exec", ns, "iptables", "-w", "-S", "OUTPUT").stdout
    return [r for r in out.splitlines() if "netsql-hold" in r]


def results(p: subprocess.Popen[str]) -> list[list[dict[str, Any]]]:
    out, err = p.communicate(timeout=90)
    assert p.returncode == 0, err
    return json.loads(out)


def test_one_capture_names_each_namespaces_senders(spaces: Spaces) -> None:
    """Same addresses, same ports: each row is in its own namespace, with its own
    sender, and capture_stats counts each namespace apart."""
    need(shutil.which("iptables") is not None, "needs iptables")
    a, b = (spaces.add(n, f"{n}.nscap.test") for n in NAMES)
    p = spaces.netsql("--capture", "5", "--hold", "--netns", a, "--netns", b, "--json",
                      "-e", "SELECT query, answers, pid, process, net_namespace, attribution "
                      "FROM dns_queries ORDER BY ts",
                      "-e", "SELECT net_namespace, running, queries, responses, by_held, "
                      "by_socket, unattributed, error FROM capture_stats "
                      "ORDER BY net_namespace")
    for ns in (a, b):
        assert wait_for(lambda ns=ns: capturing(p.pid, ns)), ns
        assert wait_for(lambda ns=ns: hold_rules(ns)), ns
    expect = {}
    for ns, name in zip((a, b), NAMES, strict=True):
        long, got = spaces.long_client(ns, f"{name}.nscap.test")
        assert got["answers"] == [ANSWER] and got["pid"] == long.pid
        assert spaces.dig(ns, f"{name}.nscap.test") == ANSWER
        expect[inode(ns)] = (f"{name}.nscap.test", got["pid"])
    rows, stats = results(p)
    mine = [r for r in rows if r["query"].endswith(".nscap.test")]
    assert {r["net_namespace"] for r in mine} == set(expect), mine
    for ns_inode, (name, long_pid) in expect.items():
        here = [r for r in mine if r["net_namespace"] == ns_inode]
        assert [r["query"] for r in here] == [name, name], here  # the other name: never
        assert all(r["answers"] == [ANSWER] for r in here)
        long_row, dig_row = here
        assert long_row["pid"] == long_pid and long_row["process"].startswith("python")
        assert dig_row["process"] == "dig" and dig_row["pid"], dig_row
        assert long_row["attribution"] in ("held", "socket")
        assert dig_row["attribution"] in ("held", "socket")
    by_ns = {s["net_namespace"]: s for s in stats}
    assert set(by_ns) == set(expect), stats
    for s in by_ns.values():
        assert s["queries"] == 2 and s["responses"] == 2 and s["error"] is None, s
        assert s["by_held"] + s["by_socket"] == 2 and s["unattributed"] == 0, s


def test_a_namespace_made_during_the_capture_is_captured(spaces: Spaces) -> None:
    """No --netns: every namespace, those made after the capture started included."""
    a = spaces.add("a", "alpha.nscap.test")
    p = spaces.netsql("--capture", "60", "--dns-buffer", "1000000", "--json", "-e",
                      "SELECT query, pid, process, net_namespace FROM dns_queries "
                      "WHERE query LIKE '%.nscap.test'",
                      "-e", "SELECT net_namespace, queries FROM capture_stats")
    assert wait_for(lambda: capturing(p.pid, a))
    late = spaces.add("late", "late.nscap.test")  # made while the capture runs
    assert wait_for(lambda: capturing(p.pid, late))
    long, got = spaces.long_client(late, "late.nscap.test")
    assert spaces.dig(a, "alpha.nscap.test") == ANSWER
    p.send_signal(signal.SIGINT)  # ends the capture window; the statements run
    rows, stats = results(p)
    by_query = {r["query"]: r for r in rows}
    assert by_query["late.nscap.test"]["net_namespace"] == inode(late), rows
    assert by_query["late.nscap.test"]["pid"] == got["pid"], rows
    assert by_query["late.nscap.test"]["process"].startswith("python"), rows
    assert by_query["alpha.nscap.test"]["net_namespace"] == inode(a), rows
    counted = {s["net_namespace"]: s["queries"] for s in stats}
    assert counted[inode(late)] >= 1 and counted[inode(a)] >= 1, stats
    long.terminate()


def test_a_gone_namespace_is_closed(spaces: Spaces) -> None:
    """The capture in-process (the one the shell and serve keep): a namespace that
    goes away has its sockets closed (they would keep it alive); its counters stay."""
    from netsql.capture.manager import DnsCapture

    cap = DnsCapture()
    cap.start()
    try:
        ns = spaces.add("gone", "gone.nscap.test")
        ino = inode(ns)
        assert wait_for(lambda: ino in cap.nsset.parts and cap.nsset.parts[ino].live.running)
        part = cap.nsset.parts[ino]
        assert part.live.socks
        assert spaces.dig(ns, "gone.nscap.test") == ANSWER
        for q in [q for q in spaces.procs if q.args[3:4] == [ns]]:
            q.terminate()
            q.wait(timeout=10)
        sh("ip", "netns", "del", ns)
        spaces.names.remove(ns)
        assert wait_for(lambda: part.closed is not None)  # (set once its sockets are)
        assert ino not in cap.nsset.parts
        assert not part.live.socks and not part.live.running
        row = next(r for r in cap.status_rows() if r["net_namespace"] == ino)
        assert row["queries"] == 1 and row["running"] is False, row
    finally:
        cap.close()


@pytest.mark.parametrize("how", ["exit", "SIGTERM", "SIGHUP"])
def test_no_hold_rule_is_left_in_any_namespace(spaces: Spaces, how: str) -> None:
    need(shutil.which("iptables") is not None, "needs iptables")
    a, b = (spaces.add(n, f"{n}.nscap.test") for n in NAMES)
    seconds = "2" if how == "exit" else "60"
    p = spaces.netsql("--capture", seconds, "--hold", "--netns", a, "--netns", b, "-e",
                      "SELECT count(*) FROM dns_queries")
    for ns in (a, b):
        assert wait_for(lambda ns=ns: hold_rules(ns)), ns
    if how != "exit":
        p.send_signal(getattr(signal, how))
    _out, err = p.communicate(timeout=60)
    assert "Traceback" not in err, err
    if how == "exit":
        assert p.returncode == 0, err
    else:
        assert p.returncode == 128 + getattr(signal, how), err
    for ns in (a, b):
        assert wait_for(lambda ns=ns: not hold_rules(ns)), (ns, hold_rules(ns))


def test_a_recording_serve_keeps_every_namespaces_dns(spaces: Spaces, tmp_path: Any) -> None:
    """`netsql serve --record` in the root namespace records the queries of every
    namespace, each with its namespace (issue 14)."""
    a, b = (spaces.add(n, f"{n}.nscap.test") for n in NAMES)
    rec, sock = tmp_path / "rec", tmp_path / "serve.sock"
    server = subprocess.Popen([sys.executable, "-m", "netsql", "serve", "--socket", str(sock),
                               "--record", str(rec), "--flush", "1"], cwd=ROOT, text=True,
                              stderr=subprocess.PIPE)
    spaces.procs.append(server)
    assert server.stderr is not None
    seen: list[str] = []
    while not any(line.startswith("netsql: serving on") for line in seen):
        line = server.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
    for ns in (a, b):
        assert wait_for(lambda ns=ns: capturing(server.pid, ns)), ns
    pids = {}
    for ns, name in zip((a, b), NAMES, strict=True):
        long, got = spaces.long_client(ns, f"{name}.nscap.test")
        pids[f"{name}.nscap.test"] = (got["pid"], inode(ns))

    def recorded() -> list[dict[str, Any]]:
        res = subprocess.run(
            [sys.executable, "-m", "netsql", "--history", str(rec), "--format", "jsonl", "-e",
             "SELECT query, pid, net_namespace FROM history.dns_queries "
             "WHERE query LIKE '%.nscap.test' ORDER BY query"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "NETSQL_SOCKET": ""})
        if res.returncode != 0:  # no file flushed yet: the views do not exist
            return []
        rows = [json.loads(line) for line in res.stdout.splitlines()]
        return rows if {r["query"] for r in rows} == set(pids) else []

    rows = wait_for(recorded, seconds=60)
    assert rows, "not recorded"
    assert {(r["query"], r["pid"], r["net_namespace"]) for r in rows} == {
        (q, pid, ino) for q, (pid, ino) in pids.items()}, rows
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=30)


def test_netns_names_an_inode_a_name_or_a_pid(spaces: Spaces) -> None:
    from netsql import netns

    ns = spaces.add("named", "named.nscap.test")
    here = os.stat("/proc/self/ns/net").st_ino
    assert netns.resolve(ns) == inode(ns)
    assert netns.resolve(str(inode(ns))) == inode(ns)
    assert netns.resolve(str(os.getpid())) == here
    dm = next(p for p in spaces.procs if p.args[3:4] == [ns])
    kids = sh("pgrep", "-P", str(dm.pid), check=False).stdout.split() or [str(dm.pid)]
    assert netns.resolve(kids[0]) == inode(ns)  # dnsmasq, a process inside it
    for bad in ("nscap-no-such", "4194303"):
        with pytest.raises(ValueError):
            netns.resolve(bad)
    res = subprocess.run([sys.executable, "-m", "netsql", "--netns", "nscap-no-such", "-e",
                          "SELECT 1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "no network namespace named 'nscap-no-such'" in \
        res.stderr, res.stderr


def test_a_rings_interfaces_are_named_in_its_namespace(spaces: Spaces) -> None:
    """A ring opened inside another namespace names that namespace's interfaces, read
    from any thread (the capture threads run in netsql's own namespace)."""
    from netsql import netns
    from netsql.capture.live import LiveCapture
    from netsql.capture.livescan import COMPILED

    need(COMPILED, "the compiled scanner (_cscan) was not built: needs a C compiler")
    ns = spaces.add("ifname", "ifname.nscap.test")
    index = int(sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/d0/ifindex").stdout)
    live = LiveCapture(lambda *a: None, None, (53,), rcvbuf=1 << 20, on_ring=lambda r: 0)
    netns.call_in(f"/run/netns/{ns}", live.open, expect=inode(ns))
    try:
        assert len(live.rings) == 1
        assert live.rings[0].ifname(index) == "d0"
        assert live.rings[0].ifname(1) == "lo"
    finally:
        live.close()


def test_rings_are_small_outside_the_namespaces_asked_for() -> None:
    """32 MiB rings in netsql's own namespace (or each --netns one), small elsewhere."""
    from netsql.capture.nsset import RING, SMALL_RING, CaptureSet, own_netns

    own = own_netns()
    assert own is not None
    every = CaptureSet(lambda *a, **k: None, None, (53,))
    assert every.ring_size(own) == RING and every.ring_size(own + 1) == SMALL_RING
    named = CaptureSet(lambda *a, **k: None, None, (53,), only=[own + 1])
    assert named.ring_size(own + 1) == RING
    assert SMALL_RING * 8 <= RING


def test_covers_says_which_namespaces_the_rows_include() -> None:
    """serve/scope.py asks the capture whether a client's namespace is in its rows."""
    from netsql.capture.manager import DnsCapture

    assert DnsCapture().covers(5) and not DnsCapture().covers(None)
    named = DnsCapture(netns=[5])
    assert named.covers(5) and not named.covers(6)
    assert not DnsCapture(interfaces=["eth0"]).covers(5)  # not captured until opened
