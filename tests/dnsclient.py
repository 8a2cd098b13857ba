"""A real DNS client process for the lab: resolves names with dnspython, optionally
keeps a TCP connection to the first answer, and prints what it got as JSON lines.

    python dnsclient.py [--tcp] [--server ADDR] [--connect PORT] [--hold SECONDS] NAME:TYPE...
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

import dns.message
import dns.query
import dns.rcode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tcp", action="store_true")
    ap.add_argument("--server", default="10.77.0.1")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--connect", type=int)
    ap.add_argument("--hold", type=float, default=0.0)
    ap.add_argument("names", nargs="+")
    a = ap.parse_args()
    first_addr = None
    for item in a.names:
        name, _, qtype = item.partition(":")
        q = dns.message.make_query(name, qtype or "A")
        query = dns.query.tcp if a.tcp else dns.query.udp
        r = query(q, a.server, port=a.port, timeout=5)
        answers = [rd.to_text() for rrset in r.answer for rd in rrset]
        addrs = [x for x in answers if x[0].isdigit() or ":" in x]
        if first_addr is None and addrs:
            first_addr = addrs[0]
        print(json.dumps({"pid": os.getpid(), "name": name, "qtype": qtype or "A",
                          "rcode": dns.rcode.to_text(r.rcode()), "answers": answers}),
              flush=True)
    if a.connect and first_addr:
        conn = socket.create_connection((first_addr, a.connect), timeout=5)
        conn.sendall(b"hello")
        print(json.dumps({"connected": conn.getsockname()}), flush=True)
        time.sleep(a.hold)
        conn.close()
    elif a.hold:
        time.sleep(a.hold)


if __name__ == "__main__":
    sys.exit(main())
