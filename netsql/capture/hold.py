"""Hold each DNS query this host sends until its sender is known (Linux NFQUEUE).

Polling for the owner of a socket after a packet is seen loses to clients that
close their socket microseconds after a local resolver answers (getent, dig).
Here an iptables rule in the OUTPUT chain queues locally sent DNS queries to
netsql; while a query is held its sender is still blocked waiting for the answer,
so the socket and the process are certainly there. netsql looks them up and lets
the packet go. The rule uses ``--queue-bypass`` and the queue is fail-open: when
netsql is not reading (it exited, or a flood fills the queue) packets pass
unchanged. Needs root and iptables (with the NFQUEUE target).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from netsql import netlink
from netsql.netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD, NFQA_UID = 1, 2, 10, 16
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQA_CFG_MASK, NFQA_CFG_FLAGS = 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_UID_GID = 0x1, 0x8
NF_ACCEPT = 1
QUEUE_BASE = 17_000
FLOOD_PER_SECOND = 3000  # more held queries a second than this: stop holding for a while
FLOOD_PAUSE = 10.0
RULE_TAG = "netsql-hold"

_NFGEN = struct.Struct("=BBH")  # family, version, res_id (big endian, packed by hand)


class HoldError(Exception):
    pass


def bound_queues() -> set[int]:
    """Queue numbers some process is reading now."""
    try:
        with open("/proc/net/netfilter/nfnetlink_queue") as f:
            return {int(line.split()[0]) for line in f if line.strip()}
    except OSError:
        return set()


def purge_stale(tool: str) -> None:
    """Remove netsql's rules left by a netsql that was killed (their queue is unread).

    They are harmless (--queue-bypass lets packets through) but untidy."""
    res = subprocess.run([tool, "-w", "-S", "OUTPUT"], capture_output=True, text=True)
    live = bound_queues()
    for line in res.stdout.splitlines():
        words = line.split()
        if RULE_TAG not in words or "--queue-num" not in words:
            continue
        num = int(words[words.index("--queue-num") + 1])
        if num not in live and words[:2] == ["-A", "OUTPUT"]:
            subprocess.run([tool, "-w", "-D", *words[1:]], capture_output=True)


class QueryHold:
    """Queue locally sent DNS queries, call ``on_query(ip_packet, uid)``, then accept."""

    def __init__(self, on_query: Callable[[bytes, int | None], None],
                 ports: Sequence[int] = (53,)) -> None:
        self.on_query = on_query
        self.ports = list(ports)
        self.queue_num: int | None = None
        self.sock: socket.socket | None = None
        self.rules: list[list[str]] = []
        self.held = 0
        self.errors = 0
        self.pauses = 0  # times a flood made us stop holding for FLOOD_PAUSE seconds
        self.paused_until = 0.0
        self._rules_lock = threading.Lock()
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- set up ----------------------------------------------------------------------
    def open(self) -> None:
        tools = [t for t in ("iptables", "ip6tables") if shutil.which(t)]
        if os.geteuid() != 0 or not tools:
            raise HoldError("needs root and iptables")
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        for offset in range(64):
            num = QUEUE_BASE + (os.getpid() + offset) % 4096
            try:
                bind = struct.pack("=BxH", NFQNL_CFG_CMD_BIND, 0)
                self._config(num, netlink.attr(NFQA_CFG_CMD, bind))
            except OSError:
                continue  # taken by another listener
            self.queue_num = num
            break
        else:
            self.close()
            raise HoldError("no free NFQUEUE number")
        flags = struct.pack(">I", NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_UID_GID)
        params = struct.pack(">IB", 512, NFQNL_COPY_PACKET)
        self._config(self.queue_num, netlink.attr(NFQA_CFG_PARAMS, params)
                     + netlink.attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", 4096))
                     + netlink.attr(NFQA_CFG_FLAGS, flags) + netlink.attr(NFQA_CFG_MASK, flags))
        try:  # a signal may land between two rules: keep the list exact, undo on error
            for tool in tools:
                purge_stale(tool)
                for proto in ("udp", "tcp"):
                    for port in self.ports:
                        rule = ["OUTPUT", "-p", proto, "--dport", str(port), "-m", "comment",
                                "--comment", RULE_TAG, "-j", "NFQUEUE", "--queue-num",
                                str(self.queue_num), "--queue-bypass"]
                        self.rules.append([tool, *rule])  # first: a signal may follow
                        self._iptables(tool, "-I", rule)
        except BaseException:
            self._delete_rules()
            self.close()
            raise

    def _iptables(self, tool: str, op: str, rule: list[str]) -> None:
        res = subprocess.run([tool, "-w", op, *rule], capture_output=True, text=True)
        if res.returncode != 0:
            raise HoldError(f"{tool} {op} failed: {res.stderr.strip().splitlines()[-1:]}")

    def _config(self, num: int, attrs: bytes) -> None:
        assert self.sock is not None
        self._seq += 1
        body = _NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(num)) + attrs
        msg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
        self.sock.send(netlink.message(msg_type, NLM_F_REQUEST | NLM_F_ACK, self._seq, body))
        while True:
            data = self.sock.recv(65536)
            for kind, seq, start, end in netlink.messages(data):
                if kind == NLMSG_ERROR and seq == self._seq:
                    err = netlink.error_code(data, start, end)
                    if err:
                        raise OSError(err, os.strerror(err))
                    return

    # -- run -----------------------------------------------------------------------
    def start(self) -> None:
        if self.sock is None:
            self.open()
        self._thread = threading.Thread(target=self._run, name="netsql-hold", daemon=True)
        self._thread.start()

    def _delete_rules(self) -> None:
        for rule in self.rules if not self.paused_until else []:
            try:
                self._iptables(rule[0], "-D", rule[1:])
            except HoldError:
                pass
        self.rules = []

    def stop(self) -> None:
        self._stop.set()
        with self._rules_lock:  # first let traffic flow past the queue again
            self._delete_rules()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _run(self) -> None:
        from netsql.capture.live import prefer_this_thread

        prefer_this_thread()
        assert self.sock is not None
        sock = self.sock
        sock.settimeout(0.2)
        window, count = time.monotonic(), 0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - window >= 1.0:
                window, count = now, 0
                if self.paused_until and now >= self.paused_until:
                    self._resume()
            if count > FLOOD_PER_SECOND and not self.paused_until:
                self._pause(now)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue  # ENOBUFS after a burst: the queue fails open meanwhile
            for kind, _, start, end in netlink.messages(data):
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    count += 1
                    self._packet(data, start, end)

    def _pause(self, now: float) -> None:
        """A flood of queries: stop holding them for a while (the rules go, packets
        already queued are let through as they come)."""
        with self._rules_lock:
            if self._stop.is_set():
                return
            for rule in self.rules:
                try:
                    self._iptables(rule[0], "-D", rule[1:])
                except HoldError:
                    pass
            self.paused_until = now + FLOOD_PAUSE
            self.pauses += 1

    def _resume(self) -> None:
        with self._rules_lock:
            if self._stop.is_set():
                return
            self.paused_until = 0.0
            for rule in self.rules:
                try:
                    self._iptables(rule[0], "-I", rule[1:])
                except HoldError:
                    pass

    def _packet(self, data: bytes, start: int, end: int) -> None:
        packet_id = None
        payload = b""
        uid = None
        for atype, vstart, vend in netlink.attributes(data, start + 4, end):  # after nfgenmsg
            atype &= 0x7FFF
            value = data[vstart:vend]
            if atype == NFQA_PACKET_HDR:
                packet_id = struct.unpack_from(">I", value, 0)[0]
            elif atype == NFQA_PAYLOAD:
                payload = value
            elif atype == NFQA_UID:
                uid = struct.unpack(">I", value)[0]
        if packet_id is None:
            return
        self.held += 1
        try:
            self.on_query(payload, uid)
        except Exception:  # the verdict must go out whatever happens
            self.errors += 1
        finally:
            self._verdict(packet_id)

    def _verdict(self, packet_id: int) -> None:
        assert self.sock is not None and self.queue_num is not None
        body = (_NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(self.queue_num))
                + netlink.attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id)))
        msg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
        try:
            self.sock.send(netlink.message(msg_type, NLM_F_REQUEST, 0, body))
        except OSError:
            self.errors += 1
