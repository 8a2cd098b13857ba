"""Which namespaces a client of ``netsql serve`` runs in, and what the server may answer
it (docs/serve.md, "Clients in other namespaces").

The server knows its client by the peer pid of the connection (SO_PEERCRED, which the
kernel gives in the server's own pid namespace), and reads that process's namespaces
from ``/proc/PID/ns``. A client in the server's namespaces is served as before. One in
another network namespace is answered per table, as a netsql run in its namespace
would answer, or refused with one line that names both namespaces and what to do
instead; one in another pid namespace gets no table with process ids. It never gets
the server's view in silence.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from netsql import netns, procfs
from netsql.errors import NetsqlError

if TYPE_CHECKING:
    from netsql.collect import Collection, Need
    from netsql.schema import Columns, Table

#: Tables whose rows cover every network namespace (each row says which): a client in
#: any namespace gets what a netsql run in its own namespace would show.
EVERY_NAMESPACE = frozenset({
    "processes", "sockets", "listening_ports", "routes", "interfaces", "net_namespaces",
    "osquery.processes", "osquery.process_open_sockets", "osquery.listening_ports",
    "osquery.process_open_files", "osquery.time", "osquery.system_info",
    "osquery.osquery_info"})
#: Tables read from netlink in the reader's network namespace: collected inside the
#: client's (a thread that enters it; its netlink sockets stay bound there).
IN_CLIENT_NAMESPACE = frozenset({"osquery.routes", "osquery.interface_addresses",
                                 "osquery.interface_details"})
#: Tables filled by the live DNS capture: answered only when the capture covers the
#: client's namespace (else its own namespace's DNS would be missing, silently).
CAPTURED = frozenset({"dns_queries", "capture_stats", "flows"})
#: Columns naming processes by pid: not the pids a client in another pid namespace
#: knows. (Tables with none of them show nothing of a pid namespace.)
PID_COLUMNS = frozenset({"pid", "ppid", "pids", "owners", "parent", "upid", "uppid"})
#: Everything else (osquery.arp_cache reads /proc/net, osquery.iptables runs
#: iptables-save, etc_hosts, dns_resolvers, users and groups read /etc, which
#: `ip netns exec` replaces with /etc/netns/NAME/*): the server's view, refused.

WHAT_TO_DO = ("run it with --local, or with NETSQL_SOCKET= (empty), or start a netsql "
              "serve --socket PATH in that namespace and point NETSQL_SOCKET there")


@dataclass(frozen=True)
class Place:
    """The namespaces of one process, by inode (None: unknown), and the identity
    (device, inode) of its root and working directories."""

    pid: int
    net: int | None
    pidns: int | None
    root: tuple[int, int] | None
    cwd: tuple[int, int] | None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _ns(pid: int | str, kind: str) -> int | None:
    link = procfs.read_link(f"{procfs.PROC}/{pid}/ns/{kind}")
    if not link or not link.endswith("]") or "[" not in link:
        return None
    return int(link[link.index("[") + 1:-1])


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of a Unix socket, in this process's pid
    namespace (SO_PEERCRED; 0 when it is not visible from here)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


def place_of(pid: int | str) -> Place:
    """Where process ``pid`` runs ("self": this one); all None when it cannot be read."""
    return Place(os.getpid() if pid == "self" else int(pid), _ns(pid, "net"),
                 _ns(pid, "pid"), _identity(f"{procfs.PROC}/{pid}/root"),
                 _identity(f"{procfs.PROC}/{pid}/cwd"))


def describe(inode: int | None) -> str:
    """A network namespace for a message: its inode, and its `ip netns` name if any."""
    if inode is None:
        return "an unknown one"
    name = netns.named().get(inode)
    return f"{inode} (ip netns {name[0]})" if name else str(inode)


def covers(capture: Any, ns: int | None, own: int | None) -> bool:
    """Whether the live capture's rows include namespace ``ns``. A capture that can say
    (``covers(ns)``, one per namespace) is asked; else it covers its own namespace
    only. No capture that ran: nothing of any namespace to show (dns_queries says so)."""
    if capture is None or not getattr(capture, "ever_started", False):
        return True
    asks: Callable[[int | None], bool] | None = getattr(capture, "covers", None)
    if callable(asks):
        return bool(asks(ns))
    return ns is not None and ns == (getattr(capture, "netns", None) or own)


class Scope:
    """What a client in other namespaces than the server's is answered: the engine
    collects each table through ``collect`` (State.scope)."""

    def __init__(self, server: Place, client: Place, capture: Any) -> None:
        self.server, self.client = server, client
        self.capture = capture
        self.other_net = client.net != server.net
        self.other_pid = client.pidns != server.pidns

    @property
    def needed(self) -> bool:
        """Whether the client's tables need this scope (it runs in other namespaces)."""
        return self.other_net or self.other_pid

    def refusal(self, cwd: str) -> str | None:
        """Why no statement of the client's may run here (None: each table decides):
        its files would not be the ones it means."""
        if self.client.pid <= 0 or self.client.net is None or self.client.pidns is None:
            return ("the resident netsql cannot tell which namespaces this command runs "
                    f"in (its pid is not visible from the server's pid namespace): {WHAT_TO_DO}")
        if None not in (self.client.root, self.server.root) and \
                self.client.root != self.server.root:
            return ("this command runs under another root directory than the resident "
                    f"netsql (a container?), whose files are not the ones it means: {WHAT_TO_DO}")
        seen = _identity(cwd)
        if None not in (self.client.cwd, seen) and self.client.cwd != seen:
            return (f"the resident netsql sees another directory at {cwd} than this command "
                    f"(another mount namespace): {WHAT_TO_DO}")
        return None

    def _net_refusal(self, table: str, why: str) -> NetsqlError:
        return NetsqlError(
            f"{table}: the resident netsql runs in network namespace "
            f"{describe(self.server.net)}, this command in {describe(self.client.net)}, "
            f"and {why}: {WHAT_TO_DO}")

    def collect(self, table: Table, coll: Collection, need: Need) -> Columns:
        key = table.key
        if self.other_pid and any(c.name in PID_COLUMNS for c in table.columns):
            raise NetsqlError(
                f"{key}: this command runs in pid namespace {self.client.pidns}, the "
                f"resident netsql in {self.server.pidns}, whose process ids this table "
                f"would show, not this namespace's: {WHAT_TO_DO}")
        if not self.other_net:
            return table.collect(coll, need)
        captured = covers(self.capture, self.client.net, self.server.net)
        if key in CAPTURED and not captured and not (
                key == "dns_queries" and coll.state.pcap is not None):
            raise self._net_refusal(key, "its DNS capture does not cover this command's "
                                    "namespace")
        if key in IN_CLIENT_NAMESPACE:
            handle = f"{procfs.PROC}/{self.client.pid}/ns/net"
            try:
                return netns.call_in(handle, partial(table.collect, coll, need))
            except OSError as exc:
                raise self._net_refusal(key, f"cannot enter it ({exc.strerror})") from None
        if key not in EVERY_NAMESPACE and key not in CAPTURED:
            raise self._net_refusal(key, "this table shows only the namespace it is "
                                    "read in")
        cols = table.collect(coll, need)
        if key == "net_namespaces" and "is_current" in cols:  # the client's, not ours
            cols["is_current"] = [ns == self.client.net for ns in cols["net_namespace"]]
        if need.wants("remote_host") and cols.get("remote_host") and not captured:
            cols["remote_host"] = [None] * len(cols["remote_host"])
            coll.warn(f"remote_host is NULL for every row: the resident netsql captures "
                      f"DNS in network namespace {describe(self.server.net)} only, not in "
                      f"this command's, {describe(self.client.net)}")
        return cols
