"""The query hold's helper process (``python -m netsql.capture.holder PORT...``).

Started by hold.py in a session of its own, so job control (Ctrl-Z, SIGSTOP of netsql's
process group) never reaches it: the verdicts keep coming while netsql is stopped.
It appends one NFQUEUE rule per DNS port to the END of the filter table's OUTPUT chain
(iptables and ip6tables), so every rule already there applies first, exactly as
without netsql, and its ACCEPT verdict is what the chain's ACCEPT policy would have
done (a chain whose policy is not ACCEPT is refused). For each held query it looks
the sending socket up (sock_diag, exact 4-tuple), finds its process among the
candidates (that uid's processes in this namespace, newest first, from the kernel's
process events), reports it on stdout as a JSON line, then lets the packet go.

stdout (JSON lines, never blocking: a line that does not fit is dropped):
``{"ready": QUEUE}``, ``{"error": TEXT}``, ``{"key": [...], "inode": N, "pid": P,
"comm": C}``, ``{"stats": {...}}``. stdin closing (netsql ended, even by kill -9) or
SIGTERM: the rules are removed and the helper exits.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

from netsql import netlink, sockdiag
from netsql.capture.hold import (
    FLOOD_PAUSE,
    FLOOD_PER_SECOND,
    HoldError,
    delete_rules,
    hold_rules,
    purge_stale,
)
from netsql.capture.owners import FdHints, newest_pids, scan_for
from netsql.capture.packets import decode_frame
from netsql.capture.procevents import ProcEventsError, ProcWatch, netns_of
from netsql.netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD, NFQA_UID = 1, 2, 10, 16
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQA_CFG_MASK, NFQA_CFG_FLAGS = 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_UID_GID = 0x1, 0x8
NF_ACCEPT = 1
QUEUE_BASE = 17_000
QUEUE_MAXLEN = 4096  # past this the kernel lets queries pass unheld (fail-open)
FLOOD_BACKLOG = 256  # more waiting than this: a flood, whatever the rate

_NFGEN = struct.Struct("=BBH")


class Holder:
    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.queue_num = 0
        self.rules: list[list[str]] = []
        self.held = self.passed = self.pauses = self.dropped_reports = 0
        self.paused_seconds = 0.0
        self.paused_until = 0.0
        self.netns = netns_of("self")
        self.procs: ProcWatch | None = ProcWatch(netns=self.netns)
        self.recent: list[int] = []
        self.hints = FdHints()
        self.diag: dict[int, socket.socket] = {}
        self._seq = 0

    # -- set up ------------------------------------------------------------------------
    def open(self) -> None:
        for offset in range(64):
            num = QUEUE_BASE + (os.getpid() + offset) % 4096
            try:
                self._config(num, netlink.attr(NFQA_CFG_CMD, struct.pack("=BxH", NFQNL_CFG_CMD_BIND,
                                                                  0)))
            except OSError:
                continue  # taken by another listener
            self.queue_num = num
            break
        else:
            raise HoldError("no free NFQUEUE number")
        flags = struct.pack(">I", NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_UID_GID)
        self._config(self.queue_num, netlink.attr(NFQA_CFG_PARAMS, struct.pack(">IB", 512,
                                                                        NFQNL_COPY_PACKET))
                     + netlink.attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", QUEUE_MAXLEN))
                     + netlink.attr(NFQA_CFG_FLAGS, flags) + netlink.attr(NFQA_CFG_MASK, flags))
        assert self.procs is not None
        try:
            self.procs.start()
        except ProcEventsError:
            self.procs = None  # candidates: every process, newest first
        purge_stale()
        for rule in hold_rules(self.ports, self.queue_num):  # refuses a non-ACCEPT policy
            self.rules.append(rule)  # first: a signal may follow
            res = subprocess.run([rule[0], "-w", "-A", *rule[1:]], capture_output=True,
                                 text=True)
            if res.returncode != 0:
                self.rules.pop()
                msg = (res.stderr.strip().splitlines() or ["failed"])[-1]
                raise HoldError(f"{rule[0]} -A failed: {msg}")

    def _config(self, num: int, attrs: bytes) -> None:
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

    def close(self) -> None:
        delete_rules(self.rules)
        self.rules = []
        if self.procs is not None:
            self.procs.stop()
        self.sock.close()

    # -- run ---------------------------------------------------------------------------
    def run(self) -> None:
        window, count, last_stats = time.monotonic(), 0, 0.0
        while True:
            ready, _, _ = select.select([self.sock, sys.stdin], [], [], 0.25)
            now = time.monotonic()
            if now - window >= 1.0:
                window, count = now, 0
            if self.paused_until and now >= self.paused_until:
                self.paused_until = 0.0
                self.paused_seconds += FLOOD_PAUSE
            if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
                return  # netsql ended
            if self.sock in ready:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""  # ENOBUFS after a burst: the queue fails open meanwhile
                for kind, _, start, end in netlink.messages(data):
                    if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                        count += 1
                        if not self.paused_until and (count > FLOOD_PER_SECOND or (
                                count % 32 == 0 and self.backlog() > FLOOD_BACKLOG)):
                            self.paused_until = now + FLOOD_PAUSE
                            self.pauses += 1
                        self._packet(data, start, end)
            if now - last_stats >= 0.5:
                last_stats = now
                self._stats()

    def backlog(self) -> int:
        """Packets waiting in this queue now (the kernel's queue_total)."""
        try:
            with open("/proc/net/netfilter/nfnetlink_queue") as f:
                for line in f:
                    words = line.split()
                    if words and int(words[0]) == self.queue_num:
                        return int(words[2])
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def _stats(self) -> None:
        paused = self.paused_seconds
        if self.paused_until:
            paused += FLOOD_PAUSE - max(self.paused_until - time.monotonic(), 0.0)
        self.report({"stats": {"held": self.held, "passed": self.passed,
                               "pauses": self.pauses, "paused_seconds": paused,
                               "dropped_reports": self.dropped_reports}})

    def report(self, obj: object) -> None:
        line = (json.dumps(obj) + "\n").encode()
        try:
            os.write(1, line)
        except BlockingIOError:
            self.dropped_reports += 1  # netsql is not reading (stopped): never wait for it

    def _packet(self, data: bytes, start: int, end: int) -> None:
        packet_id = uid = None
        payload = b""
        for atype, vstart, vend in netlink.attributes(data, start + 4, end):  # after nfgenmsg
            atype &= 0x7FFF
            if atype == NFQA_PACKET_HDR:
                packet_id = struct.unpack_from(">I", data, vstart)[0]
            elif atype == NFQA_PAYLOAD:
                payload = data[vstart:vend]
            elif atype == NFQA_UID:
                uid = struct.unpack_from(">I", data, vstart)[0]
        if packet_id is None:
            return
        found: dict[str, object] | None = None
        try:
            if self.paused_until:
                self.passed += 1
            else:
                self.held += 1
                found = self._name(payload, uid)
        except Exception:  # the verdict must go out whatever happens
            pass
        finally:
            self._verdict(packet_id)
        if found is not None:
            self.report(found)  # after the verdict: the sender waits for neither

    def _name(self, packet: bytes, uid: int | None) -> dict[str, object] | None:
        """The sender of a held packet, as the report to send once it is let go."""
        info = decode_frame(101, packet)
        if info is None:
            return None
        src, dst, sport, dport, transport, _, _, _ = info
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        diag = self.diag.get(family)
        if diag is None:
            diag = self.diag[family] = sockdiag.open_socket()
        proto = socket.IPPROTO_TCP if transport == "tcp" else socket.IPPROTO_UDP
        hit = sockdiag.find(diag, family, proto, (src, sport), (dst, dport))
        if hit is None or not hit[9]:
            return None
        inode, owner_uid = hit[9], hit[8]
        owner = scan_for({inode}, self._candidates(owner_uid if uid is None else uid),
                         self.hints).get(inode)
        if owner is None:
            return None
        pid, comm = owner
        if self.recent[:1] != [pid]:
            if pid in self.recent:
                self.recent.remove(pid)
            self.recent.insert(0, pid)
            del self.recent[64:]
        return {"key": [transport, src, sport, dst, dport], "inode": inode, "pid": pid,
                "comm": comm}

    def _candidates(self, uid: int) -> Iterator[int]:
        """Those that asked lately, then (only if needed) that uid's newest processes."""
        yield from list(self.recent)
        if self.procs is not None:
            yield from self.procs.candidates(uid, self.netns)
        else:
            yield from newest_pids()

    def _verdict(self, packet_id: int) -> None:
        body = (_NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(self.queue_num))
                + netlink.attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id)))
        msg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
        try:
            self.sock.send(netlink.message(msg_type, NLM_F_REQUEST, 0, body))
        except OSError:
            pass


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
                signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)

    def term(_sig: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, term)
    os.set_blocking(1, False)
    # The process-events thread must not keep the GIL from a held packet for the
    # default 5 ms: a query waits while it does.
    sys.setswitchinterval(0.0002)
    ports = [int(p) for p in sys.argv[1:]] or [53]
    holder: Holder | None = None
    try:
        holder = Holder(ports)
        holder.open()
        holder.report({"ready": holder.queue_num})
        holder.run()
        holder._stats()  # the final counts, for capture_stats after the window
    except (HoldError, OSError) as exc:
        line = json.dumps({"error": str(exc)}) + "\n"
        os.set_blocking(1, True)
        os.write(1, line.encode())
        return 1
    finally:
        if holder is not None:
            holder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
