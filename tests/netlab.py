"""A two-host DNS lab: namespaces 'client' and 'server' joined by a veth pair, a real
dnsmasq answering names the tests choose, and helpers to run processes in either.

    server ns: veth 10.77.0.1/24 fd77::1/64, plus 10.77.0.10 and fd77::10 (app hosts)
    client ns: veth 10.77.0.2/24 fd77::2/64, /etc/netns/<client>/resolv.conf -> 10.77.0.1
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from tests.conftest import need

T = TypeVar("T")
SERVER_V4, SERVER_V6 = "10.77.0.1", "fd77::1"
CLIENT_V4, CLIENT_V6 = "10.77.0.2", "fd77::2"
APP_V4, APP_V6 = "10.77.0.10", "fd77::10"

# name -> addresses dnsmasq answers (A and AAAA).
HOSTS = {
    "vmp.boldchat.com": [APP_V4, APP_V6],
    "www.example.test": [APP_V4, APP_V6],
    "api.example.test": ["10.77.0.11"],
    "evil.badsite.test": [APP_V4],
    "sub.evil.badsite.test": [APP_V4],
    "notbadsite.test": ["10.77.0.12"],
}
CNAMES = {"alias.example.test": "www.example.test"}


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@dataclass
class Lab:
    client: str
    server: str
    tmp: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, ns: str, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True,
                              text=True, timeout=60, **kw)  # type: ignore[call-overload]

    def spawn(self, ns: str, *cmd: str, **kw: object) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], text=True,
                             **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def netsql_capture(self, seconds: float, *args: str, new_session: bool = False,
                       netns: Sequence[str] | None = None) -> subprocess.Popen[str]:
        """netsql run in the client namespace, capturing the namespaces ``netns``
        (default: the client's alone, so other tests' traffic on the host stays out);
        returns once capture has started: its packet socket is open and, with --hold,
        its hold rules are read."""
        limit = [a for ns in ([self.client] if netns is None else netns)
                 for a in ("--netns", ns)]
        p = self.spawn(self.client, sys.executable, "-m", "netsql", "--capture",
                       str(seconds), *limit, *args, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       start_new_session=new_session)
        assert p.stderr is not None
        line = p.stderr.readline()
        assert line.startswith("netsql: capturing DNS"), line + p.stderr.read()
        assert wait_for(lambda: capturing(p.pid)), "no packet socket open"
        if "--hold" in args:
            assert wait_for(lambda: self.hold_rules(read=True)), "no hold rule read"
        return p

    def hold_rules(self, read: bool = False) -> list[str]:
        """netsql's hold rules in the client namespace (``read``: only those whose
        queue a process reads)."""
        out = self.run(self.client, "iptables", "-w", "-S", "OUTPUT").stdout
        rules = [r for r in out.splitlines() if "netsql-hold" in r]
        if read:
            bound = self.run(self.client, "cat", "/proc/net/netfilter/nfnetlink_queue")
            queues = {line.split()[0] for line in bound.stdout.splitlines() if line}
            rules = [r for r in rules if r.split("--queue-num ")[1].split()[0] in queues]
        return rules

    def resolve(self, *args: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run tests/dnsclient.py in the client namespace (a separate, real process)."""
        here = os.path.dirname(os.path.abspath(__file__))
        return self.run(ns or self.client, sys.executable, os.path.join(here, "dnsclient.py"),
                        *args)


def wait_for(check: Callable[[], T], seconds: float = 10.0) -> T:
    """Poll ``check`` until it returns something true, or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    return check()


def capturing(pid: int, ns: str | None = None) -> bool:
    """Whether process ``pid`` holds an AF_PACKET socket (its capture is open) of network
    namespace ``ns`` (an `ip netns` name; default: the process's own namespace)."""
    try:
        if ns is None:
            with open(f"/proc/{pid}/net/packet") as f:
                table = f.read()
        else:
            table = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/packet"],
                                   capture_output=True, text=True, timeout=60).stdout
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    inodes = {line.split()[-1] for line in table.splitlines()[1:] if line.strip()}
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] in inodes:
                return True
        except OSError:
            continue
    return False


def stop(procs: Sequence[subprocess.Popen[Any]], timeout: float = 5.0) -> None:
    """End the processes of ``procs`` still running, the last started first: SIGTERM (a
    netsql capture removes its rules), then SIGKILL if one has not ended in ``timeout``
    seconds."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _dnsmasq_args(pidfile: str, listen: list[str], extra: list[str]) -> list[str]:
    args = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
            "--bind-interfaces", "--listen-address=" + ",".join(listen), "--port=53",
            f"--pid-file={pidfile}", "--local=/test/", "--local=/com/", "--log-facility=-",
            "--local-ttl=300",
            "--user=root", "--group=root"]
    for name, addrs in HOSTS.items():
        args.append(f"--host-record={name}," + ",".join(addrs))
    for alias, target in CNAMES.items():
        args.append(f"--cname={alias},{target}")
    return args + extra


@pytest.fixture
def lab() -> Iterator[Lab]:
    need(os.geteuid() == 0 and shutil.which("ip") is not None, "needs root and iproute2")
    need(shutil.which("dnsmasq") is not None, "needs dnsmasq")
    tag = uuid.uuid4().hex[:6]
    client, server = f"nsqc-{tag}", f"nsqs-{tag}"
    tmp = f"/tmp/netsql-lab-{tag}"
    os.makedirs(tmp)
    lab = Lab(client, server, tmp)
    try:
        for ns in (client, server):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        sh("ip", "link", "add", f"vc{tag}", "netns", client, "type", "veth", "peer", "name",
           f"vs{tag}", "netns", server)
        for ns, dev, v4, v6 in ((client, f"vc{tag}", CLIENT_V4, CLIENT_V6),
                                (server, f"vs{tag}", SERVER_V4, SERVER_V6)):
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        for extra in (APP_V4 + "/24", "10.77.0.11/24", "10.77.0.12/24"):
            sh("ip", "-n", server, "addr", "add", extra, "dev", f"vs{tag}")
        sh("ip", "-n", server, "addr", "add", APP_V6 + "/64", "dev", f"vs{tag}", "nodad")
        os.makedirs(f"/etc/netns/{client}", exist_ok=True)
        with open(f"/etc/netns/{client}/resolv.conf", "w") as f:
            f.write(f"nameserver {SERVER_V4}\noptions attempts:1 timeout:2\n")
        dm = lab.spawn(server, *_dnsmasq_args(f"{tmp}/dnsmasq.pid", [SERVER_V4, SERVER_V6], []),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(lab, server, SERVER_V4, 53, dm)
        yield lab
    finally:
        stop(lab.procs)
        for ns in (client, server):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(f"/etc/netns/{client}", ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_port(lab: Lab, ns: str, addr: str, port: int, proc: subprocess.Popen[str]) -> None:
    for _ in range(100):
        out = lab.run(ns, "ss", "-lntH", f"src {addr}:{port}" if ":" not in addr else "")
        if f"{addr}:{port}" in out.stdout:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError("dnsmasq did not start")


def start_stub(lab: Lab) -> subprocess.Popen[str]:
    """A second dnsmasq in the client namespace on 127.0.0.53, forwarding to the server
    (as systemd-resolved would)."""
    p = lab.spawn(lab.client, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                  "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.53",
                  "--port=53", f"--pid-file={lab.tmp}/stub.pid", f"--server={SERVER_V4}",
                  "--cache-size=0", "--user=root", "--group=root",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(lab, lab.client, "127.0.0.53", 53, p)
    return p
