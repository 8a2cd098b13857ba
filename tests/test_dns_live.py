"""Live DNS capture in a two-namespace lab with a real dnsmasq, attributed to processes."""

from __future__ import annotations

import json
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
    p = lab.netsql_capture(4, "--json", "-e",
                           "SELECT query, qtype, rcode, answers, answer_types, transport, "
                           "server_address, client_address, pid, process, status, forwarder "
                           "FROM dns_queries ORDER BY ts")
    udp4 = client_lines(lab.resolve("www.example.test:A", "www.example.test:AAAA",
                                    "alias.example.test:A", "nosuch.example.test:A"))
    tcp6 = client_lines(lab.resolve("--tcp", "--server", SERVER_V6, "vmp.boldchat.com:AAAA"))
    rows = finish(p)
    pid4, pid6 = udp4[0]["pid"], tcp6[0]["pid"]
    want = [
        ("www.example.test", "A", "NOERROR", [APP_V4], "udp", SERVER_V4, pid4),
        ("www.example.test", "AAAA", "NOERROR", [APP_V6], "udp", SERVER_V4, pid4),
        ("alias.example.test", "A", "NOERROR", ["www.example.test", APP_V4], "udp",
         SERVER_V4, pid4),
        ("nosuch.example.test", "A", "NXDOMAIN", [], "udp", SERVER_V4, pid4),
        ("vmp.boldchat.com", "AAAA", "NOERROR", [APP_V6], "tcp", SERVER_V6, pid6),
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


def test_short_lived_process_is_still_named(lab: Lab) -> None:
    p = lab.netsql_capture(3, "--json", "-e",
                           "SELECT query, pid, process FROM dns_queries "
                           "WHERE query = 'api.example.test'")
    res = lab.run(lab.client, "getent", "hosts", "api.example.test")
    assert res.returncode == 0 and "10.77.0.11" in res.stdout
    res2 = lab.run(lab.client, "dig", "+short", "+tries=1", "api.example.test")
    assert "10.77.0.11" in res2.stdout
    rows = finish(p)
    assert {r["process"] for r in rows} == {"getent", "dig"}, rows
    assert all(r["pid"] for r in rows)


def test_stub_resolver_app_is_named_not_the_stub(lab: Lab) -> None:
    stub = start_stub(lab)
    p = lab.netsql_capture(3, "--json", "-e",
                           "SELECT query, client_address, server_address, pid, process, "
                           "forwarder FROM dns_queries WHERE query = 'www.example.test' "
                           "ORDER BY server_address = '127.0.0.53' DESC")
    app = client_lines(lab.resolve("--server", "127.0.0.53", "www.example.test:A"))
    rows = finish(p)
    assert len(rows) == 2, rows
    to_stub, upstream = rows
    assert (to_stub["server_address"], to_stub["pid"], to_stub["forwarder"]) == (
        "127.0.0.53", app[0]["pid"], False)
    assert to_stub["process"].startswith("python")
    assert (upstream["server_address"], upstream["pid"], upstream["process"],
            upstream["forwarder"]) == (SERVER_V4, stub.pid if False else upstream["pid"],
                                       "dnsmasq", True)
    assert upstream["pid"] != app[0]["pid"]


def test_domain_to_connected_process_in_one_join(lab: Lab) -> None:
    server = lab.spawn(lab.server, sys.executable, "-c",
                       "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,"
                       f" socket.SO_REUSEADDR, 1); s.bind(('{APP_V4}', 8443)); s.listen();"
                       "c=s.accept(); time.sleep(30)")
    time.sleep(0.3)
    p = lab.netsql_capture(
        3, "--json", "-e",
        "SELECT p.pid, p.name, s.remote_address, s.remote_port, s.remote_host, d.query "
        "FROM dns_queries d JOIN sockets s ON list_contains(d.answers, s.remote_address) "
        "JOIN processes p ON p.pid = s.pid WHERE d.query = 'vmp.boldchat.com' "
        "AND s.state = 'ESTABLISHED'")
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
