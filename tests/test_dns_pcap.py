"""dns_queries from capture files written by real tcpdump and tshark in the lab."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

from tests.conftest import need, run_netsql
from tests.netlab import APP_V4, APP_V6, Lab, lab

__all__ = ["lab"]


def _capture(lab: Lab, cmd: list[str], path: str) -> subprocess.Popen[str]:
    p = lab.spawn(lab.client, *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):  # both tools create the file once they are capturing
        if os.path.exists(path) and os.path.getsize(path) > 0:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    return p


def test_tcpdump_and_tshark_files(lab: Lab, tmp_path: object) -> None:
    need(shutil.which("tcpdump") is not None and shutil.which("tshark") is not None,
         "needs tcpdump and tshark")
    pcap = os.path.join(lab.tmp, "any.pcap")
    pcapng = os.path.join(lab.tmp, "veth.pcapng")
    veth = lab.run(lab.client, "ip", "-o", "link", "show", "type", "veth").stdout.split(":")[1]
    veth = veth.strip().split("@")[0]
    t1 = _capture(lab, ["tcpdump", "-i", "any", "-U", "--immediate-mode", "-Z", "root", "-w",
                        pcap, "port", "53"], pcap)
    t2 = _capture(lab, ["tshark", "-q", "-i", veth, "-w", pcapng, "-f", "port 53"], pcapng)
    r1 = lab.resolve("www.example.test:A", "alias.example.test:AAAA", "gone.example.test:A")
    r2 = lab.resolve("--tcp", "vmp.boldchat.com:A")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    time.sleep(1.0)
    for t in (t1, t2):
        t.send_signal(signal.SIGINT)
        t.wait(timeout=10)
    want = [("www.example.test", "A", "NOERROR", [APP_V4], "udp"),
            ("alias.example.test", "AAAA", "NOERROR", ["www.example.test", APP_V6], "udp"),
            ("gone.example.test", "A", "NXDOMAIN", [], "udp"),
            ("vmp.boldchat.com", "A", "NOERROR", [APP_V4], "tcp")]
    for path in (pcap, pcapng):
        out = run_netsql("--pcap", path, "--json", "-e",
                         "SELECT query, qtype, rcode, answers, transport, source, status, pid, "
                         "rtt FROM dns_queries ORDER BY ts")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        got = [(r["query"], r["qtype"], r["rcode"], r["answers"], r["transport"]) for r in rows]
        assert got == want, path
        for r in rows:
            assert r["source"] == os.path.basename(path) and r["status"] == "answered"
            assert r["pid"] is None and 0 <= r["rtt"] < 1000  # ms
    both = run_netsql("--pcap", pcap, "--pcap", pcapng, "--csv", "--no-header", "-e",
                      "SELECT source, count(*) FROM dns_queries GROUP BY ALL ORDER BY ALL")
    assert both.stdout.splitlines() == ["any.pcap,4", "veth.pcapng,4"]


def test_bad_capture_files(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "notes.pcap")
    with open(path, "w") as f:
        f.write("this is not a capture\n")
    out = run_netsql("--pcap", path, "-e", "SELECT count(*) FROM dns_queries")
    assert out.returncode == 1
    assert out.stderr.strip() == f"netsql: error: {path}: not a pcap or pcapng file"
    ok = run_netsql("--pcap", path, "--csv", "-e", "SELECT 1 AS one")
    assert ok.returncode == 0 and ok.stdout.splitlines() == ["one", "1"]
    missing = run_netsql("--pcap", path + ".nope", "-e", "SELECT 1")
    assert missing.returncode == 2
    assert missing.stderr == (f"netsql: error: cannot read capture file {path}.nope: "
                              "No such file or directory\n")
    folder = run_netsql("--pcap", str(tmp_path), "-e", "SELECT 1")
    assert folder.returncode == 2
    assert folder.stderr == f"netsql: error: cannot read capture file {tmp_path}: Is a directory\n"


def test_rtt_is_in_milliseconds(tmp_path: object) -> None:
    """A response 12.3456 ms after its query: rtt 12.346 in every format's number."""
    import dpkt

    from tests.dnsutil import udp_ip
    from tests.test_fastscan import pcap

    q = dpkt.dns.DNS(id=7, op=0x0100, qd=[dpkt.dns.DNS.Q(name="a.example.test", type=1)])
    r = dpkt.dns.DNS(id=7, op=0x8180, qd=q.qd, an=[dpkt.dns.DNS.RR(
        name="a.example.test", type=1, ttl=60, rdata=bytes([192, 0, 2, 9]))])
    path = os.path.join(str(tmp_path), "rtt.pcap")
    with open(path, "wb") as f:
        f.write(pcap([(100.0, 101, udp_ip("192.0.2.1", "198.51.100.53", 4000, 53, bytes(q))),
                      (100.0123456, 101, udp_ip("198.51.100.53", "192.0.2.1", 53, 4000,
                                                bytes(r)))]))
    out = run_netsql("--pcap", path, "--json", "-e", "SELECT query, rtt FROM dns_queries")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"query": "a.example.test", "rtt": 12.346}]
