"""osquery.process_open_sockets: every socket of every network namespace with its owner.

Text that does not apply is '' (osquery sets every column), as osquery's packs expect
(``WHERE path <> '' OR remote_address <> ''``).

TCP and UDP come from netsql's sockets reader (sock_diag, else /proc/net text); raw,
UDP-Lite, ping (ICMP), unix and packet sockets from /proc/<pid>/net/* once per
namespace, as osquery reads them. Owners come from the shared /proc/*/fd scan.
"""

from __future__ import annotations

from typing import Any

from netsql import netns, procfs
from netsql.backends import linux_sockets as sockets
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

AF_UNIX, AF_INET, AF_INET6, AF_PACKET = 1, 2, 10, 17
FAMILIES = {"ipv4": AF_INET, "ipv6": AF_INET6}
PROTOCOLS = {"tcp": 6, "udp": 17}
#: netsql's TCP state names -> osquery's (osquery says CLOSED, and knows no NEW_SYN_RECV).
STATES = {"CLOSE": "CLOSED", "NEW_SYN_RECV": "UNKNOWN"}
#: Other inet sockets osquery lists: /proc/net file -> (family, protocol; None: the
#: protocol is the raw socket's, in the local port field).
TEXT_FILES = (("raw", AF_INET, None), ("raw6", AF_INET6, None),
              ("udplite", AF_INET, 136), ("udplite6", AF_INET6, 136),
              ("icmp", AF_INET, 1), ("icmp6", AF_INET6, 58))
NAMES = ("pid", "fd", "socket", "family", "protocol", "local_address", "remote_address",
         "local_port", "remote_port", "path", "state", "net_namespace")


def _any(family: int) -> str:
    return "0.0.0.0" if family == AF_INET else "::"


def _inet_text(rows: list[dict[str, Any]], text: str, family: int, proto: int | None,
               ns: str) -> None:
    cache: dict[str, str] = {}
    conv = sockets.hex_ipv4 if family == AF_INET else sockets.hex_ipv6
    for f, lhex, lport, rhex, rport in sockets.proc_net_entries(text):
        raw = proto is None
        rows.append({"socket": int(f[9]), "family": family,
                     "protocol": int(lport, 16) if raw else proto,
                     "local_address": conv(lhex, cache), "local_port": 0 if raw else
                     int(lport, 16), "remote_address": conv(rhex, cache),
                     "remote_port": 0 if raw else int(rport, 16), "path": "", "state": "",
                     "net_namespace": ns})


def _unix_text(rows: list[dict[str, Any]], text: str, ns: str) -> None:
    # Num RefCount Protocol Flags Type St Inode [Path]
    for line in text.splitlines()[1:]:
        f = line.split(None, 7)
        if len(f) < 7:
            continue
        rows.append({"socket": int(f[6]), "family": AF_UNIX, "protocol": int(f[2], 16),
                     "local_address": "", "remote_address": "", "local_port": 0,
                     "remote_port": 0, "path": f[7] if len(f) > 7 else "", "state": "",
                     "net_namespace": ns})


def _packet_text(rows: list[dict[str, Any]], text: str, ns: str) -> None:
    # sk RefCnt Type Proto Iface R Rmem User Inode
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 9:
            continue
        proto = int(f[3], 16)
        rows.append({"socket": int(f[8]), "family": AF_PACKET,
                     "protocol": proto, "local_address": "",
                     "remote_address": "", "local_port": 0, "remote_port": 0, "path": "",
                     "state": "NONE", "net_namespace": ns})


def _net_files(handle: str) -> dict[str, str | None]:
    """The /proc/net files osquery reads (besides TCP and UDP) of one namespace: through
    a process in it, else from inside it (a /run/netns namespace without processes)."""
    names = [n for n, _, _ in TEXT_FILES] + ["unix", "packet"]
    base = procfs.proc_dir(handle)
    if base is not None:
        return {n: procfs.read_text(f"{base}/net/{n}") for n in names}
    try:
        return netns.call_in(handle, lambda: {
            n: procfs.read_text(f"/proc/thread-self/net/{n}") for n in names})
    except OSError:
        return {}


def all_sockets(coll: Collection) -> list[dict[str, Any]]:
    """Every socket of every namespace as osquery shapes it (no owners yet)."""

    def scan() -> list[dict[str, Any]]:
        src = sockets.read_sockets(coll)
        rows: list[dict[str, Any]] = []
        for fam, proto, laddr, lport, raddr, rport, state, inode, ns in zip(
                src["family"], src["protocol"], src["local_address"], src["local_port"],
                src["remote_address"], src["remote_port"], src["state"], src["inode"],
                src["net_namespace"], strict=True):
            family = FAMILIES[fam]
            rows.append({
                "socket": inode, "family": family, "protocol": PROTOCOLS[proto],
                "local_address": laddr, "local_port": lport,
                "remote_address": raddr if raddr is not None else _any(family),
                "remote_port": rport if rport is not None else 0,
                "state": STATES.get(state, state) if proto == "tcp" else "", "path": "",
                "net_namespace": None if ns is None else str(ns)})
        for ns, handle in procfs.namespaces(coll).items():
            texts = _net_files(handle)
            for name, family, pnum in TEXT_FILES:
                if texts.get(name):
                    _inet_text(rows, texts[name] or "", family, pnum, str(ns))
            _unix_text(rows, texts.get("unix") or "", str(ns))
            _packet_text(rows, texts.get("packet") or "", str(ns))
        return rows

    return coll.once("osquery.sockets", scan)


def with_owners(coll: Collection, need: Need) -> list[dict[str, Any]]:
    """The sockets with pid and fd: -1 when no process (readable to us) holds one; with
    a pid filter, only those processes' sockets (as osquery)."""
    rows = all_sockets(coll)
    inodes = [r["socket"] for r in rows]
    # WHERE pid = -1 asks for the unowned sockets: every process must be read.
    pids = None if need.pids is None or min(need.pids, default=0) < 0 else need.pids
    owners = procfs.socket_owners(coll, pids, expect=inodes).first
    out = []
    for r in rows:
        hit = owners.get(r["socket"])
        if pids is not None and hit is None:
            continue
        out.append({**r, "pid": hit[0] if hit else -1, "fd": hit[1] if hit else -1})
    return out


def collect(coll: Collection, need: Need) -> Columns:
    rows = with_owners(coll, need)
    return {k: [r.get(k) for r in rows] for k in NAMES}


TABLE = table(
    "process_open_sockets",
    "Processes which have open network sockets on the system (osquery's "
    "process_open_sockets): TCP, UDP, UDP-Lite, raw, ping, unix and packet sockets of "
    "every network namespace.",
    [
        col("pid", "INTEGER", "Process (or thread) ID; -1 when no process holds the "
            "socket (TIME_WAIT) or its owner is not readable without root"),
        col("fd", "BIGINT", "Socket file descriptor number; -1 with pid -1"),
        col("socket", "BIGINT", "Socket inode number"),
        col("family", "INTEGER", "Network protocol: 2 AF_INET, 10 AF_INET6, 1 AF_UNIX, "
            "17 AF_PACKET"),
        col("protocol", "INTEGER", "Transport protocol: 6 TCP, 17 UDP, 136 UDP-Lite, 1 "
            "ICMP / 58 ICMPv6 (ping sockets), a raw socket's own protocol; unix sockets: "
            "0; packet sockets: the Ethernet protocol (3 = ETH_P_ALL)"),
        col("local_address", "TEXT", "Socket local address ('0.0.0.0' or '::' for any); "
            "'' for unix and packet sockets"),
        col("remote_address", "TEXT", "Socket remote address ('0.0.0.0' or '::' when not "
            "connected)"),
        col("local_port", "INTEGER", "Socket local port (0 for raw, unix, packet)"),
        col("remote_port", "INTEGER", "Socket remote port (0 when not connected)"),
        col("path", "TEXT", "For UNIX sockets (family=1), the domain path ('@name' for "
            "an abstract socket); '' when unnamed and for other sockets"),
        col("state", "TEXT", "TCP socket state (ESTABLISHED, LISTEN, TIME_WAIT, CLOSED, "
            "...); 'NONE' for packet sockets; '' for the others"),
        col("net_namespace", "TEXT", "The inode number of the network namespace"),
    ],
    collect,
    examples=("SELECT pid, family, protocol, local_address, local_port, remote_address, "
              "remote_port, state FROM process_open_sockets WHERE family IN (2, 10)",),
    notes="A socket shared by several processes (after fork) is listed once, with the "
    "lowest pid (osquery: once per process); netsql's sockets.owners lists them all.",
)
