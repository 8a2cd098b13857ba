"""netsql off Linux, as far as this Linux host can show it: a subprocess that says it
is macOS (``sys.platform == "darwin"``) and has no AF_NETLINK or AF_PACKET imports
every module, reads the host tables through the psutil backend without netsql's own
code touching /proc or /sys, and gets one-line errors from what needs Linux."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.dnsutil import link_frame, udp_ip

ROOT = Path(__file__).resolve().parents[1]

DARWIN = r"""
import io, json, os, pkgutil, importlib, socket, sys
root, pcap = sys.argv[1], sys.argv[2]
import psutil  # this host's psutil stands in for macOS's (it picks its platform at import)
sys.platform = "darwin"
for name in [n for n in vars(socket) if n.startswith(("AF_NETLINK", "AF_PACKET", "PF_PACKET",
                                                       "NETLINK_", "SO_BINDTODEVICE"))]:
    delattr(socket, name)
package = os.path.join(root, "netsql") + os.sep
touched = []

def audit(event, args):
    # Whose code opens /proc or /sys: psutil's may (it reads them on this real Linux),
    # netsql's must not.
    if event not in ("open", "os.listdir", "os.scandir", "readlink") or not args:
        return
    path = args[0]
    path = os.fsdecode(path) if isinstance(path, (str, bytes)) else ""
    if not path.startswith(("/proc", "/sys")):
        return
    f = sys._getframe(1)
    while f is not None:
        name = f.f_code.co_filename
        if os.sep + "psutil" + os.sep in name:
            return
        if name.startswith(package):
            touched.append(f"{path} from {name[len(root):]}:{f.f_lineno}")
            return
        f = f.f_back

sys.addaudithook(audit)
real_readlink = os.readlink
def readlink(path, *a, **k):
    audit("readlink", (path,))
    return real_readlink(path, *a, **k)
os.readlink = readlink

import netsql
failed = {}
for m in pkgutil.walk_packages(netsql.__path__, "netsql."):
    if m.name != "netsql.__main__":
        try:
            importlib.import_module(m.name)
        except Exception as exc:
            failed[m.name] = repr(exc)

from netsql.cli import main
from netsql.context import Env
from netsql.registry import default_tables

def run(*argv, env=None):
    saved = dict(os.environ)
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    try:
        status = main(["--local", *argv], Env(stdout=out, stderr=err, stdin=io.StringIO(""),
                                              stdin_isatty=False, stdout_isatty=False))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {"status": int(status), "out": out.getvalue(), "err": err.getvalue()}

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp.bind(("::1", 0))
port, uport = listener.getsockname()[1], udp.getsockname()[1]
me = os.getpid()
result = {
    "failed": failed,
    "processes": run("--json", "-e", f"SELECT pid, ppid, name, cmdline, uid, username, "
                     f"net_namespace FROM processes WHERE pid = {me}"),
    "all_processes": run("--json", "-e", "SELECT count(*) AS n, count(name) AS named "
                         "FROM processes"),
    "sockets": run("--json", "-e", f"SELECT pid, fd, protocol, family, local_address, "
                   f"local_port, state, inode FROM sockets WHERE pid = {me} ORDER BY fd"),
    "listening": run("--json", "-e", "SELECT pid, protocol, address, port, wildcard, "
                     f"backlog FROM listening_ports WHERE port IN ({port}, {uport}) "
                     "ORDER BY port"),
    "interfaces": run("--json", "-e", "SELECT name, is_up, flags, addresses, mtu, type "
                      "FROM interfaces WHERE name = 'lo'"),
    "pcap": run("--json", "--pcap", pcap, "-e", "SELECT query, answers FROM dns_queries"),
    "routes": run("-e", "SELECT * FROM routes"),
    "flows": run("-e", "SELECT * FROM flows"),
    "capture": run("--capture", "1", "-e", "SELECT count(*) FROM dns_queries"),
    "native": run("-e", "SELECT 1", env={"NETSQL_BACKEND": "native"}),
    "listener": [me, port, uport, listener.fileno(), udp.fileno()],
    "every_table": {t.name: run("-e", f"SELECT count(*) FROM {t.name}")
                    for t in default_tables()},
    "pyroute2": "pyroute2" in sys.modules,
    "touched": touched,
}
print(json.dumps(result))
"""


def _pcap(path: Path) -> None:
    import dns.message
    import dns.rrset
    import dpkt

    q = dns.message.make_query("portable.example.test", "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("portable.example.test.", 60, "IN", "A", "192.0.2.9"))
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        for ts, (a, b, sp, dp, wire) in enumerate([
                ("10.0.0.2", "10.0.0.1", 40000, 53, q.to_wire()),
                ("10.0.0.1", "10.0.0.2", 53, 40000, r.to_wire())]):
            w.writepkt(link_frame("ethernet", udp_ip(a, b, sp, dp, wire))[1], ts=1e9 + ts)


def test_as_darwin_everything_imports_and_host_tables_come_from_psutil(tmp_path: Path) -> None:
    pcap = tmp_path / "dns.pcap"
    _pcap(pcap)
    env = {k: v for k, v in os.environ.items() if k != "NETSQL_BACKEND"}
    env.update(PYTHONPATH=str(ROOT), NETSQL_SOCKET="")
    out = subprocess.run([sys.executable, "-c", DARWIN, str(ROOT), str(pcap)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["failed"] == {}
    assert got["touched"] == []
    assert got["pyroute2"] is False
    me, port, uport, lfd, ufd = got["listener"]

    def rows(name: str) -> list[dict[str, object]]:
        r = got[name]
        assert r["status"] == 0, r["err"]
        return list(json.loads(r["out"]))

    (proc,) = rows("processes")
    assert proc["pid"] == me and proc["ppid"] == os.getpid()
    assert proc["uid"] == os.getuid() and proc["username"]
    assert str(proc["cmdline"]).startswith(sys.executable + " -c ")
    assert proc["net_namespace"] is None  # Linux only
    (every,) = rows("all_processes")
    assert int(str(every["n"])) > 1 and every["named"] == every["n"]
    socks = rows("sockets")
    assert [(s["fd"], s["protocol"], s["family"], s["local_port"], s["state"], s["inode"])
            for s in socks] == [(lfd, "tcp", "ipv4", port, "LISTEN", None),
                                (ufd, "udp", "ipv6", uport, None, None)]
    assert rows("listening") == [
        {"pid": me, "protocol": p, "address": a, "port": n, "wildcard": False,
         "backlog": None} for p, a, n in sorted([("tcp", "127.0.0.1", port),
                                                 ("udp", "::1", uport)],
                                                key=lambda t: t[2])]
    (lo,) = rows("interfaces")
    assert lo["is_up"] is True and "LOOPBACK" in lo["flags"] and lo["type"] is None
    assert "127.0.0.1/8" in lo["addresses"] and int(str(lo["mtu"])) > 0
    assert rows("pcap") == [{"query": "portable.example.test", "answers": ["192.0.2.9"]}]
    for name, words in (("routes", "routes needs Linux"), ("flows", "flows needs Linux"),
                        ("capture", "live DNS capture needs Linux"),
                        ("native", "NETSQL_BACKEND=native")):
        r = got[name]
        assert r["status"] == (2 if name == "native" else 1), (name, r)
        (line,) = r["err"].splitlines()
        assert line.startswith("netsql: error:") and words in line, (name, line)
    assert "/dev/bpf" in got["capture"]["err"] and "/dev/bpf" in got["flows"]["err"]
    # Every table, those added later included: rows, or one line saying it needs Linux.
    assert {"processes", "sockets", "routes", "flows"} <= set(got["every_table"])
    for name, r in got["every_table"].items():
        assert r["status"] in (0, 1), (name, r)
        assert "Traceback" not in r["err"], (name, r["err"])
        if r["status"] == 1:
            (line,) = r["err"].splitlines()
            assert line.startswith(f"netsql: error: {name} needs Linux"), (name, line)


SETUP = r"""
import runpy, sys, setuptools
sys.platform = sys.argv[1]
seen = {}
setuptools.setup = lambda **kw: seen.update(kw)
runpy.run_path("setup.py", run_name="__main__")
print(sorted(e.name for e in seen.get("ext_modules", [])))
"""


def test_c_parts_are_built_on_linux_only() -> None:
    def extensions(platform: str) -> str:
        out = subprocess.run([sys.executable, "-c", SETUP, platform], capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert extensions("darwin") == "[]"
    assert extensions("freebsd14") == "[]"
    assert extensions("linux") == ("['netsql._cdiag', 'netsql.capture._chold', "
                                    "'netsql.capture._cscan']")
