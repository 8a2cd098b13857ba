"""flows: kernel TCP counters per connection, and UDP flows counted while capture runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.netlab import APP_V4, CLIENT_V4, Lab, lab

__all__ = ["lab"]

SENDER = f"""
import socket, sys, time
n = int(sys.argv[1])
c = socket.create_connection(('{APP_V4}', 9100))
c.sendall(b'x' * n)
got = 0
while got < 3000:
    got += len(c.recv(65536))
print(c.getsockname()[1], flush=True)
time.sleep(30)
"""

SINK = f"""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('{APP_V4}', 9100)); s.listen(); c, _ = s.accept()
got = 0
while got < 250000:
    got += len(c.recv(65536))
c.sendall(b'y' * 3000)
time.sleep(30)
"""


def test_tcp_counters_match_what_was_sent_and_ss(lab: Lab) -> None:
    lab.spawn(lab.server, sys.executable, "-c", SINK)
    lab.run(lab.server, "sleep", "0.3")
    sender = lab.spawn(lab.client, sys.executable, "-c", SENDER, "250000",
                       stdout=subprocess.PIPE)
    assert sender.stdout is not None
    port = int(sender.stdout.readline())
    out = lab.run(lab.client, sys.executable, "-m", "netsql", "--json", "-e",
                  "SELECT pid, process, local_address, remote_address, remote_port, state, "
                  "bytes_sent, bytes_acked, bytes_received, segs_out, segs_in, rtt, source "
                  f"FROM flows WHERE local_port = {port} AND net_namespace = "
                  f"{os.stat(f'/run/netns/{lab.client}').st_ino}",
                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert (row["pid"], row["process"], row["local_address"], row["remote_address"],
            row["remote_port"], row["state"], row["source"]) == (
        sender.pid, "python", CLIENT_V4, APP_V4, 9100, "ESTABLISHED", "tcp_info")
    assert row["bytes_sent"] == 250000 and row["bytes_received"] == 3000
    assert 250000 <= row["bytes_acked"] <= 250001
    assert row["rtt"] > 0
    ss = lab.run(lab.client, "ss", "-tinH", "src", f"{CLIENT_V4}:{port}").stdout
    theirs = {k: int(v) for k, v in re.findall(r"\b(bytes_sent|bytes_acked|bytes_received|"
                                                r"segs_out|segs_in):(\d+)", ss)}
    assert theirs["bytes_sent"] == row["bytes_sent"]
    assert theirs["bytes_received"] == row["bytes_received"]
    assert theirs["bytes_acked"] == row["bytes_acked"]
    assert abs(theirs["segs_out"] - row["segs_out"]) <= 2
    # rtt in milliseconds, as ss shows it (the connection is idle: srtt stays put).
    ss_rtt = float(re.findall(r"\brtt:([\d.]+)/", ss)[0])
    assert abs(row["rtt"] - ss_rtt) <= 0.25 * ss_rtt + 0.01, (row["rtt"], ss)


def test_udp_flow_appears_while_capture_runs(lab: Lab) -> None:
    p = lab.netsql_capture(
        3, "--json", "-e",
        "SELECT protocol, pid, local_address, remote_address, remote_port, packets_out, "
        "bytes_sent, source FROM flows WHERE protocol = 'udp' AND remote_port = 9200")
    code = ("import socket, os\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0', 0))\n"
            f"for i in range(25): s.sendto(b'z' * 100, ('{APP_V4}', 9200))\n"
            "print(os.getpid(), flush=True)\nimport time; time.sleep(5)")
    sender = lab.spawn(lab.client, sys.executable, "-c", code, stdout=subprocess.PIPE)
    assert sender.stdout is not None
    pid = int(sender.stdout.readline())
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    (row,) = json.loads(out)
    assert row == {"protocol": "udp", "pid": pid, "local_address": CLIENT_V4,
                   "remote_address": APP_V4, "remote_port": 9200, "packets_out": 25,
                   "bytes_sent": 25 * 128, "source": "capture"}
