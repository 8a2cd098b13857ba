"""dns_queries from capture files written by real tcpdump and tshark in the lab."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from tests.conftest import need, run_netsql
from tests.netlab import APP_V4, APP_V6, Lab, lab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def _as_another_user(*args: str) -> list[str]:
    """netsql run by a user who is not root: nobody, or, when nobody cannot reach this
    interpreter (one under /root), root without the capabilities that bypass file
    permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): either gets EACCES on a file
    of another owner's with mode 0600."""
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    reach = subprocess.run([*nobody, sys.executable, "-c", "import netsql"],
                           capture_output=True, cwd=REPO)
    drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search"]
    return [*(nobody if reach.returncode == 0 else drop), sys.executable, "-m", "netsql",
            *args]


def test_a_capture_file_the_user_may_not_read() -> None:
    """EACCES, as a user who is not root: one line saying why, exit status 2 (cli.md),
    for a one-liner and for the shell."""
    need(os.geteuid() == 0 and shutil.which("setpriv") is not None,
         "needs root (to drop to another user) and setpriv")
    import tempfile

    home = tempfile.mkdtemp(prefix="netsql-pcap-", dir="/tmp")  # the user can reach /tmp
    try:
        _refused_then_read(home)
    finally:
        shutil.rmtree(home)


def _refused_then_read(home: str) -> None:
    from tests.test_fastscan import pcap

    os.chmod(home, 0o755)
    path = os.path.join(home, "private.pcap")
    with open(path, "wb") as f:
        f.write(pcap([]))
    os.chown(path, 54321, 54321)  # an owner neither nobody nor root is
    os.chmod(path, 0o600)
    env = dict(os.environ, NETSQL_SOCKET="", HOME=home)
    for extra in (["-e", "SELECT count(*) FROM dns_queries"], []):
        out = subprocess.run(_as_another_user("--pcap", path, *extra), capture_output=True,
                             text=True, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                             timeout=60)
        assert out.returncode == 2, out.stderr
        assert out.stderr == (f"netsql: error: cannot read capture file {path}: "
                              "Permission denied\n")
    os.chmod(path, 0o644)  # the same file, readable: the refusal was about permission
    ok = subprocess.run(_as_another_user("--pcap", path, "--csv", "-e",
                                         "SELECT count(*) AS n FROM dns_queries"),
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["n", "0"]


def test_a_pipe_as_capture_file_is_refused_without_waiting(tmp_path: object) -> None:
    """A FIFO with no writer: opening it would wait for ever; it is refused at once."""
    fifo = os.path.join(str(tmp_path), "live.pcap")
    os.mkfifo(fifo)
    for extra in (["-e", "SELECT count(*) FROM dns_queries"], []):
        out = run_netsql("--pcap", fifo, *extra, timeout=30)
        assert out.returncode == 2, out.stderr
        assert out.stderr == (f"netsql: error: cannot read capture file {fifo}: a pipe, "
                              "which can be read only once; save the capture to a file "
                              "first (tcpdump -w FILE)\n")


def test_a_device_and_a_truncated_file(tmp_path: object) -> None:
    """/dev/zero is not a capture file (one line, 1); a file cut short in a record
    gives the records before the cut."""
    out = run_netsql("--pcap", "/dev/zero", "-e", "SELECT count(*) FROM dns_queries",
                     timeout=30)
    assert out.returncode == 1
    assert out.stderr == "netsql: error: /dev/zero: not a pcap or pcapng file\n"
    import dpkt

    from tests.dnsutil import udp_ip
    from tests.test_fastscan import pcap

    q = dpkt.dns.DNS(id=7, op=0x0100, qd=[dpkt.dns.DNS.Q(name="a.example.test", type=1)])
    frame = udp_ip("192.0.2.1", "198.51.100.53", 4000, 53, bytes(q))
    whole = pcap([(100.0, 101, frame), (101.0, 101, frame)])
    path = os.path.join(str(tmp_path), "cut.pcap")
    with open(path, "wb") as f:
        f.write(whole[:-10])  # the second record is cut short
    out = run_netsql("--pcap", path, "--csv", "--no-header", "-e",
                     "SELECT count(*) FROM dns_queries")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.splitlines() == ["1"]


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
