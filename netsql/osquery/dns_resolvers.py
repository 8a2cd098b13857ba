"""osquery.dns_resolvers: resolv.conf's nameservers (IPv4 and IPv6), search domains and
sortlist ($NETSQL_RESOLV_CONF names another file)."""

from __future__ import annotations

import os

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

ENV = "NETSQL_RESOLV_CONF"
#: glibc's _res.options after res_init: RES_INIT | RES_RECURSE | RES_DEFNAMES | RES_DNSRCH.
DEFAULT_OPTIONS = 0x1 | 0x40 | 0x80 | 0x200
#: resolv.conf options -> glibc's RES_* bits (resolv.h).
OPTION_BITS = {"debug": 0x2, "use-vc": 0x8, "rotate": 0x4000, "no-check-names": 0x8000,
               "edns0": 0x100000, "single-request": 0x200000,
               "single-request-reopen": 0x400000, "no-tld-query": 0x1000000,
               "trust-ad": 0x4000000, "no-reload": 0x2000000}
MAX_NAMESERVERS = 3  # glibc's MAXNS: later nameserver lines are ignored


def path() -> str:
    return os.environ.get(ENV) or "/etc/resolv.conf"


def parse(text: str) -> list[tuple[int, str, str, str | None, int]]:
    """Rows (id, type, address, netmask, options) as glibc's resolver reads the file."""
    import ipaddress

    servers: list[str] = []
    search: list[str] = []
    sortlist: list[tuple[str, str]] = []
    options = DEFAULT_OPTIONS
    for line in text.splitlines():
        words = line.split()
        if not words or words[0][0] in "#;":
            continue
        key, args = words[0], words[1:]
        if key == "nameserver" and args and len(servers) < MAX_NAMESERVERS:
            try:
                servers.append(str(ipaddress.ip_address(args[0].split("%")[0])))
            except ValueError:
                continue
        elif key in ("search", "domain") and args:
            search = args if key == "search" else args[:1]  # the last line wins
        elif key == "sortlist":
            for item in args:
                addr, _, mask = item.partition("/")
                sortlist.append((addr, mask))
        elif key == "options":
            for opt in args:
                options |= OPTION_BITS.get(opt, 0)
    rows: list[tuple[int, str, str, str | None, int]] = []
    for i, s in enumerate(servers):
        rows.append((i, "nameserver", s, "128" if ":" in s else "32", options))
    for i, d in enumerate(search):
        rows.append((i, "search", d, None, options))
    for i, (a, m) in enumerate(sortlist):
        rows.append((i, "sortlist", a, m or None, options))
    return rows


def collect(coll: Collection, need: Need) -> Columns:
    where = path()
    text = procfs.read_text(where)
    if text is None:
        coll.warn(f"dns_resolvers: cannot read {where}")
        text = ""
    rows = parse(text)
    names = ("id", "type", "address", "netmask", "options")
    cols: Columns = {k: [r[i] for r in rows] for i, k in enumerate(names)}
    cols["pid_with_namespace"] = [0] * len(rows)
    return cols


TABLE = table(
    "dns_resolvers",
    "Resolvers used by this host (osquery's dns_resolvers), from resolv.conf: IPv6 "
    "nameservers included.",
    [
        col("id", "INTEGER", "Address type index or order"),
        col("type", "TEXT", "Address type: sortlist, nameserver, search"),
        col("address", "TEXT", "Resolver IP/IPv6 address (for search, the domain); "
            "osquery returns '' for an IPv6 nameserver"),
        col("netmask", "TEXT", "Address (sortlist) netmask length; for nameservers '32' "
            "(IPv4) or '128' (IPv6)"),
        col("options", "BIGINT", "Resolver options: glibc's _res.options bits after "
            "reading the file (RES_INIT | RES_RECURSE | RES_DEFNAMES | RES_DNSRCH = 705, "
            "plus rotate 0x4000, edns0 0x100000, ...)"),
        col("pid_with_namespace", "INTEGER", "osquery reads a container's file with it; "
            "here always 0 (hidden)", hidden=True),
    ],
    collect,
    examples=("SELECT address FROM dns_resolvers WHERE type = 'nameserver'",),
    notes="Parses the file as glibc does (at most 3 nameservers; the last search or "
    "domain line wins) instead of calling res_init. $NETSQL_RESOLV_CONF names another "
    "file. On systemd-resolved hosts /etc/resolv.conf names the 127.0.0.53 stub.",
)
