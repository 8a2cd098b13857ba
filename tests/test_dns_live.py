"""Live DNS capture in a two-namespace lab with a real dnsmasq, attributed to processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from tests.netlab import APP_V4, APP_V6, SERVER_V4, SERVER_V6, Lab, lab, start_stub

__all__ = ["lab"]  # the fixture


def finish(p: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return json.loads(out)


def client_lines(res: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_queries_are_decoded_and_attributed(lab: Lab) -> None:
    p = lab.netsql_capture(4, "--hold", "--json", "-e",
                           "SELECT query, qtype, rcode, answers, answer_types, transport, "
                           "server_address, client_address, pid, process, status, forwarder "
                           "FROM dns_queries ORDER BY ts")
    udp4 = client_lines(lab.resolve("www.example.test:A", "www.example.test:AAAA",
                                    "alias.example.test:A", "nosuch.example.test:A"))
    tcp6 = client_lines(lab.resolve("--tcp", "--server", SERVER_V6, "vmp.boldchat.com:AAAA"))
    udp6 = client_lines(lab.resolve("--server", SERVER_V6, "api.example.test:A"))
    tcp4 = client_lines(lab.resolve("--tcp", "www.example.test:AAAA"))
    rows = finish(p)
    pid4, pid6 = udp4[0]["pid"], tcp6[0]["pid"]
    want = [
        ("www.example.test", "A", "NOERROR", [APP_V4], "udp", SERVER_V4, pid4),
        ("www.example.test", "AAAA", "NOERROR", [APP_V6], "udp", SERVER_V4, pid4),
        ("alias.example.test", "A", "NOERROR", ["www.example.test", APP_V4], "udp",
         SERVER_V4, pid4),
        ("nosuch.example.test", "A", "NXDOMAIN", [], "udp", SERVER_V4, pid4),
        ("vmp.boldchat.com", "AAAA", "NOERROR", [APP_V6], "tcp", SERVER_V6, pid6),
        ("api.example.test", "A", "NOERROR", ["10.77.0.11"], "udp", SERVER_V6, udp6[0]["pid"]),
        ("www.example.test", "AAAA", "NOERROR", [APP_V6], "tcp", SERVER_V4, tcp4[0]["pid"]),
    ]
    got = [(r["query"], r["qtype"], r["rcode"], r["answers"], r["transport"],
            r["server_address"], r["pid"]) for r in rows]
    assert got == want
    for r in rows:
        assert r["process"].startswith("python"), r
        assert r["status"] == "answered" and r["forwarder"] is False
    assert rows[2]["answer_types"] == ["CNAME", "A"]
    # What the client itself saw agrees with the captured answers.
    assert udp4[2]["answers"] == ["www.example.test.", APP_V4]
    assert udp4[3]["rcode"] == "NXDOMAIN"


def test_short_lived_process_is_still_named_with_the_hold(lab: Lab) -> None:
    """Certain with --hold; passively, tests/test_attribution.py counts 20 tries."""
    p = lab.netsql_capture(3, "--hold", "--json", "-e",
                           "SELECT query, pid, process, attribution FROM dns_queries "
                           "WHERE query = 'api.example.test'")
    res = lab.run(lab.client, "getent", "hosts", "api.example.test")
    assert res.returncode == 0 and "10.77.0.11" in res.stdout
    res2 = lab.run(lab.client, "dig", "+short", "+tries=1", "api.example.test")
    assert "10.77.0.11" in res2.stdout
    rows = finish(p)
    assert {r["process"] for r in rows} == {"getent", "dig"}, rows
    assert all(r["pid"] for r in rows)
    assert {r["attribution"] for r in rows} <= {"held", "socket"}


def test_stub_resolver_app_is_named_not_the_stub(lab: Lab) -> None:
    stub = start_stub(lab)
    p = lab.netsql_capture(3, "--json", "-e",
                           "SELECT query, client_address, server_address, pid, process, "
                           "attribution, forwarder FROM dns_queries "
                           "WHERE query = 'www.example.test' "
                           "ORDER BY server_address = '127.0.0.53' DESC")
    app = client_lines(lab.resolve("--server", "127.0.0.53", "www.example.test:A"))
    rows = finish(p)
    assert len(rows) == 2, rows
    to_stub, upstream = rows
    assert (to_stub["server_address"], to_stub["pid"], to_stub["forwarder"]) == (
        "127.0.0.53", app[0]["pid"], False)
    assert to_stub["process"].startswith("python")
    assert (upstream["server_address"], upstream["pid"], upstream["process"],
            upstream["forwarder"]) == (SERVER_V4, stub.pid, "dnsmasq", True)
    # The stub's upstream socket lives ~0.2 ms: caught, or named as the stub that had
    # just been asked the same question.
    assert to_stub["attribution"] in ("socket", "inferred")
    assert upstream["attribution"] in ("socket", "inferred")


def test_domain_to_connected_process_in_one_join(lab: Lab) -> None:
    server = lab.spawn(lab.server, sys.executable, "-c",
                       "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,"
                       f" socket.SO_REUSEADDR, 1); s.bind(('{APP_V4}', 8443)); s.listen();"
                       "c=s.accept(); time.sleep(30)")
    time.sleep(0.3)
    # Other labs may run on this host at once: stay in this lab's client namespace.
    ns = os.stat(f"/run/netns/{lab.client}").st_ino
    p = lab.netsql_capture(
        3, "--json", "-e",
        "SELECT p.pid, p.name, s.remote_address, s.remote_port, s.remote_host, d.query "
        "FROM dns_queries d JOIN sockets s ON list_contains(d.answers, s.remote_address) "
        "JOIN processes p ON p.pid = s.pid WHERE d.query = 'vmp.boldchat.com' "
        f"AND s.state = 'ESTABLISHED' AND s.net_namespace = {ns}")
    client = lab.spawn(lab.client, sys.executable, "tests/dnsclient.py", "--connect", "8443",
                       "--hold", "20", "vmp.boldchat.com:A", stdout=subprocess.PIPE)
    assert client.stdout is not None
    first = json.loads(client.stdout.readline())
    assert json.loads(client.stdout.readline())["connected"]
    rows = finish(p)
    assert server.poll() is None
    assert rows == [{"pid": first["pid"], "name": rows[0]["name"], "remote_address": APP_V4,
                     "remote_port": 8443, "remote_host": "vmp.boldchat.com",
                     "query": "vmp.boldchat.com"}]
    assert rows[0]["name"].startswith("python")


def test_bounded_buffer_counts_evictions_and_kernel_filter(lab: Lab) -> None:
    p = lab.netsql_capture(3, "--dns-buffer", "3", "--json", "-e",
                           "SELECT query FROM dns_queries ORDER BY ts; "
                           "SELECT packets, messages, evicted, buffered, capacity "
                           "FROM capture_stats")
    # Non-DNS traffic on the same link must not reach netsql at all.
    noise = ("import socket\nfor i in range(200):\n"
             "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x' * 64, "
             f"('{SERVER_V4}', 9999))\n")
    assert lab.run(lab.client, sys.executable, "-c", noise).returncode == 0
    client_lines(lab.resolve(*[f"n{i}.example.test:A" for i in range(5)]))
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    arrays = json.loads(out)  # two statements: an array of their arrays
    assert [r["query"] for r in arrays[0]] == [f"n{i}.example.test" for i in (2, 3, 4)]
    stats = arrays[1][0]
    assert stats == {"packets": 10, "messages": 10, "evicted": 2, "buffered": 3,
                     "capacity": 3}


def test_without_cap_net_raw_only_dns_queries_fails(lab: Lab) -> None:
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
           "--inh-caps=-all", sys.executable, "-m", "netsql", "--capture", "1"]
    ok = lab.run(lab.client, *cmd, "--csv", "-e", "SELECT count(*) > 0 AS n FROM processes",
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["n", "true"]
    bad = lab.run(lab.client, *cmd, "-e", "SELECT count(*) FROM dns_queries",
                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "netsql: error: live capture needs CAP_NET_RAW: run netsql as root (sudo), or read "
        "a capture file with --pcap FILE")
    assert "Traceback" not in bad.stderr


def test_interface_choice_and_unknown_interface(lab: Lab) -> None:
    stub = start_stub(lab)
    del stub
    p = lab.netsql_capture(3, "-i", "lo", "--json", "-e",
                           "SELECT DISTINCT interface, server_address FROM dns_queries "
                           "WHERE query = 'www.example.test'")
    client_lines(lab.resolve("--server", "127.0.0.53", "www.example.test:A"))
    rows = finish(p)
    # Only loopback was captured: the app's query to the stub, not the stub's upstream.
    assert rows == [{"interface": "lo", "server_address": "127.0.0.53"}]
    bad = lab.run(lab.client, sys.executable, "-m", "netsql", "-i", "nosuch0", "--capture",
                  "1", "-e", "SELECT count(*) FROM dns_queries",
                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == "netsql: error: no such interface: nosuch0"


def test_ctrl_c_ends_the_capture_window_and_still_answers(lab: Lab) -> None:
    """As with tcpdump: the first Ctrl-C ends the window early, the statements run."""
    t0 = time.monotonic()
    p = lab.netsql_capture(60, "--json", "-e",
                           "SELECT query FROM dns_queries WHERE query = 'api.example.test'")
    client_lines(lab.resolve("api.example.test:A"))
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert time.monotonic() - t0 < 30  # not the 60 s window
    assert "capture ended early" in err and "Traceback" not in err
    assert json.loads(out) == [{"query": "api.example.test"}]


def test_second_ctrl_c_aborts(lab: Lab) -> None:
    p = lab.netsql_capture(60, "--json", "-e", "SELECT query FROM dns_queries")
    assert p.stderr is not None
    p.send_signal(signal.SIGINT)
    line = p.stderr.readline()
    while line and "capture ended early" not in line:
        line = p.stderr.readline()
    assert "Ctrl-C again aborts" in line
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err
    assert out == ""
