"""The query hold's helper process (``python -m netsql.capture.holder PORT...``).

Started by hold.py in a session of its own, so job control (Ctrl-Z, SIGSTOP of netsql's
process group) never reaches it: the verdicts keep coming while netsql is stopped.
It appends one NFQUEUE rule per DNS port to the END of the filter table's OUTPUT chain
(iptables and ip6tables), so every rule already there applies first, exactly as
without netsql, and its ACCEPT verdict is what the chain's ACCEPT policy would have
done (a chain whose policy is not ACCEPT is refused). For each held query it looks
the sending socket up (sock_diag, exact 4-tuple), finds its process among the
candidates (that uid's processes in this namespace, newest first, from the kernel's
process events), lets the packet go, then reports it on stdout as a JSON line.

When _chold.c is built, the per-packet path (parse, sock_diag, the owner where it was
seen before, its name, the verdict, the report) runs in a thread of its own that never
takes the GIL, and reports in batches (REPORT_LINGER_US, REPORT_AGE_US); a sender not
found there stays held for the scan of candidates here. Without it, ``lookup_packets``
below is the same path in Python (tests compare the two). For benchmarks/bench_hold.py only:
``--floor c|py`` lets every packet go at once, naming nobody (in C, or in this Python
loop); ``--python`` names in Python even when _chold is built.

stdout (JSON lines, never blocking: a line that does not fit is dropped):
``{"ready": QUEUE}``, ``{"error": TEXT}``, ``{"key": [...], "inode": N, "pid": P,
"comm": C}``, ``{"stats": {...}}``. stdin closing (netsql ended, even by kill -9) or
SIGTERM: the rules are removed and the helper exits.

NFQUEUE's messages are nfqueue.py's; the flood pause, holdflood.py's.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from netsql import netlink, sockdiag
from netsql.capture.hold import FLOOD_PER_SECOND, HoldError, delete_rules, hold_rules, purge_stale
from netsql.capture.holdflood import FloodPause
from netsql.capture.nfqueue import (
    BIND,
    NETLINK_NETFILTER,
    PACKET_MSG,
    accept,
    configure,
    packet_fields,
    queue_params,
    queue_total,
)
from netsql.capture.owners import FdHints, hinted_owner, newest_pids, promote, scan_for
from netsql.capture.packets import decode_frame
from netsql.capture.procevents import ProcEventsError, ProcWatch, netns_of, read_comm

try:
    from netsql.capture import _chold  # type: ignore[attr-defined]
    COMPILED = True
    _RECORD = _chold.RECORD_SIZE
except ImportError:  # no C compiler at install: the same path in Python
    _chold = None
    COMPILED = False
    _RECORD = 1

QUEUE_BASE = 17_000
QUEUE_MAXLEN = 4096  # past this the kernel lets queries pass unheld (fail-open)
FLOOD_BACKLOG = 256  # more waiting than this: a flood, whatever the rate
#: The compiled path reports names in batches: after REPORT_LINGER_US without a held
#: packet, or REPORT_AGE_US after the batch's first, or at once when one is left for a
#: scan. Waking Python for each lookup put its work (and the reader's) on the CPUs the
#: client and its resolver wait for: back-to-back lookups, the compiled helper alone,
#: this 2-core VM, two runs each: +0.037 to +0.052 ms at the median returning to
#: Python after each packet, +0.022 to +0.029 ms with these batches. Within 2 ms: what
#: the live capture's ring takes to hand a packet over (live.py TIMEOUT_MS), and
#: attrib.py looks at the hold's names again before it infers.
REPORT_LINGER_US = 500
REPORT_AGE_US = 2000

#: What became of a held packet (the first item of lookup_packets' and _chold's tuples):
#: let go, nothing named; named, then let go; its owner still to find, still held.
PASSED, NAMED, SCAN = 0, 1, 2
Key = tuple[str, str, int, str, int]
#: (kind, packet_id, key, inode, uid, pid, comm)
Item = tuple[int, int, Key | None, int | None, int | None, int | None, str | None]


def report_of(key: Key, inode: int | None, pid: int, comm: str | None) -> dict[str, object]:
    """A named sender's report (_chold.c's report_line writes the same object)."""
    return {"key": list(key), "inode": inode, "pid": pid, "comm": comm}


class Diag:
    """One sock_diag socket per family, opened when first needed."""

    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}

    def get(self, family: int) -> socket.socket:
        s = self.socks.get(family)
        if s is None:
            s = self.socks[family] = sockdiag.open_socket()
        return s


def name_held(packet_id: int, payload: bytes, uid: int | None, hints: FdHints,
              recent: list[int], diag: Diag) -> Item:
    """The sender of one held packet, found by hints alone (_chold's name_packet)."""
    info = decode_frame(101, payload)
    if info is None:
        return PASSED, packet_id, None, None, None, None, None
    src, dst, sport, dport, transport, _, _, _ = info
    key: Key = (transport, src, sport, dst, dport)
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    proto = socket.IPPROTO_TCP if transport == "tcp" else socket.IPPROTO_UDP
    hit = sockdiag.find(diag.get(family), family, proto, (src, sport), (dst, dport))
    if hit is None or not hit[9]:
        return PASSED, packet_id, key, None, None, None, None
    inode, owner_uid = hit[9], (hit[8] if uid is None else uid)
    pid = hinted_owner(inode, recent, hints)
    if pid is None:
        return SCAN, packet_id, key, inode, owner_uid, None, None
    return NAMED, packet_id, key, inode, owner_uid, pid, read_comm(pid)


def lookup_packets(data: bytes, hints: FdHints, recent: list[int], diag: Diag,
                   name: bool = True) -> list[Item]:
    """One tuple per held packet in a netlink datagram (_chold.lookup's twin)."""
    out: list[Item] = []
    for kind, _, start, end in netlink.messages(data):
        if kind != PACKET_MSG:
            continue
        packet_id, uid, payload = packet_fields(data, start, end)
        if packet_id is None:
            continue
        if name and payload:
            out.append(name_held(packet_id, payload, uid, hints, recent, diag))
        else:
            out.append((PASSED, packet_id, None, None, None, None, None))
    return out


class Holder:
    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.queue_num = 0
        self.rules: list[list[str]] = []
        self.held = self.passed = self.dropped_reports = 0
        self.compiled = False  # _chold's thread counts held and passed
        self.flood = FloodPause(self.backlog, FLOOD_BACKLOG)
        self.netns = netns_of("self")
        self.procs: ProcWatch | None = ProcWatch(netns=self.netns)
        self.recent: list[int] = []
        self.hints = FdHints()
        self.diag = Diag()
        self._seq = 0

    # -- set up ------------------------------------------------------------------------
    def open(self) -> None:
        for offset in range(64):
            num = QUEUE_BASE + (os.getpid() + offset) % 4096
            try:
                self._config(num, BIND)
            except OSError:
                continue  # taken by another listener
            self.queue_num = num
            break
        else:
            raise HoldError("no free NFQUEUE number")
        self._config(self.queue_num, queue_params(512, QUEUE_MAXLEN))
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
        configure(self.sock, self._seq, num, attrs)

    def close(self) -> None:
        delete_rules(self.rules)
        self.rules = []
        if self.procs is not None:
            self.procs.stop()
        self.sock.close()

    # -- run ---------------------------------------------------------------------------
    def run(self, floor: str | None = None, python: bool = False) -> None:
        if floor == "c" and _chold is not None:
            _chold.passthrough(self.sock.fileno(), self.queue_num, sys.stdin.fileno())
        elif COMPILED and floor is None and not python:
            self._run_compiled()
        else:
            self._run_python(name=floor is None)

    def _run_compiled(self) -> None:
        """_chold's thread names and lets go each held packet and reports it; here: the
        senders it could not find, the flood pause, the counts."""
        assert _chold is not None
        window, base, last, last_stats = time.monotonic(), 0, 0, 0.0
        stdin = sys.stdin.fileno()
        results, w = os.pipe()
        os.set_blocking(w, False)
        # Real-time only when asked (NETSQL_HOLD_REALTIME=1, docs/dns.md): it lowers the
        # hold's p99 but raises everyone else's.
        rt = FLOOD_PER_SECOND if os.environ.get("NETSQL_HOLD_REALTIME") == "1" else 0
        _chold.start(self.sock.fileno(), self.queue_num, w, 1, REPORT_LINGER_US,
                     REPORT_AGE_US, rt)
        self.compiled = True
        try:
            pending = b""
            while True:
                ready, _, _ = select.select([results, stdin], [], [], 0.05)
                now = self.flood.tick()
                if stdin in ready and not os.read(stdin, 4096):
                    return  # netsql ended
                if results in ready:
                    pending += os.read(results, 1 << 16)
                    items = _chold.decode(pending)
                    pending = pending[len(pending) - len(pending) % _RECORD:]
                    for item in items:
                        self._finish(item)
                held, passed, _ = _chold.counts()
                if now - window >= 1.0:
                    window, base = now, held + passed
                if held + passed != last:  # a flood: by rate, or by what waits
                    last = held + passed
                    if self.flood.check(last - base, now, every=1):
                        _chold.set_naming(False)
                if not self.flood.paused_until:
                    _chold.set_naming(True)
                if now - last_stats >= 0.5:
                    last_stats = now
                    self._stats()
        finally:
            _chold.stop()
            os.close(w)
            os.close(results)

    def _run_python(self, name: bool = True) -> None:
        window, count, last_stats = time.monotonic(), 0, 0.0
        while True:
            ready, _, _ = select.select([self.sock, sys.stdin], [], [], 0.25)
            now = self.flood.tick()
            if now - window >= 1.0:
                window, count = now, 0
            if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
                return  # netsql ended
            if self.sock in ready:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""  # ENOBUFS after a burst: the queue fails open meanwhile
                for kind, _, start, end in netlink.messages(data):
                    if kind == PACKET_MSG:
                        count += 1
                        self.flood.check(count, now)
                        self._packet(data, start, end, name)
            if now - last_stats >= 0.5:
                last_stats = now
                self._stats()

    def backlog(self) -> int:
        """Packets waiting in this queue now."""
        return queue_total(self.queue_num)

    def _stats(self) -> None:
        dropped = self.dropped_reports
        if self.compiled and _chold is not None:
            self.held, self.passed, unsent = _chold.counts()
            dropped += unsent
        self.report({"stats": {"held": self.held, "passed": self.passed,
                               "pauses": self.flood.pauses,
                               "paused_seconds": self.flood.seconds(),
                               "dropped_reports": dropped}})

    def report(self, obj: object) -> None:
        line = (json.dumps(obj) + "\n").encode()
        try:
            os.write(1, line)
        except BlockingIOError:
            self.dropped_reports += 1  # netsql is not reading (stopped): never wait for it

    def _packet(self, data: bytes, start: int, end: int, name: bool = True) -> None:
        packet_id, uid, payload = packet_fields(data, start, end)
        if packet_id is None:
            return
        item: Item = (PASSED, packet_id, None, None, None, None, None)
        try:
            if self.flood.paused_until or not name:
                self.passed += 1
            else:
                self.held += 1
                item = name_held(packet_id, payload, uid, self.hints, self.recent,
                                 self.diag)
        except Exception:  # the verdict must go out whatever happens
            pass
        if item[0] != SCAN:
            self._verdict(packet_id)
        self._finish(item)

    def _finish(self, item: Item) -> None:
        """Name a sender the hints did not find (a scan of candidates; then let it go),
        and report a named one (after its verdict: the sender waits for neither)."""
        kind, packet_id, key, inode, uid, pid, comm = item
        if kind == SCAN:
            try:
                assert inode is not None and uid is not None
                owner = scan_for({inode}, self._candidates(uid), self.hints).get(inode)
                if owner is not None:
                    pid, comm = owner
                    at = self.hints.by_inode.get(inode)
                    if at is not None and _chold is not None:
                        _chold.hit(at[0], at[1], inode)
            except Exception:  # the verdict must go out whatever happens
                pid = None
            finally:
                self._verdict(packet_id)
        if pid is None or key is None:
            return
        promote(self.recent, pid)
        self.report(report_of(key, inode, pid, comm))

    def _candidates(self, uid: int) -> Iterator[int]:
        """Those that asked lately, then (only if needed) that uid's newest processes."""
        yield from _chold.recent() if self.compiled and _chold is not None else list(
            self.recent)
        if self.procs is not None:
            yield from self.procs.candidates(uid, self.netns)
        else:
            yield from newest_pids()

    def _verdict(self, packet_id: int) -> None:
        accept(self.sock, self.queue_num, packet_id)


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
    args = sys.argv[1:]
    floor, python = None, False
    if args[:1] == ["--floor"]:  # benchmarks/bench_hold.py: the cost of the hold alone
        floor, args = args[1], args[2:]
    if args[:1] == ["--python"]:  # benchmarks/bench_hold.py: the Python path, compared
        python, args = True, args[1:]
    ports = [int(p) for p in args] or [53]
    holder: Holder | None = None
    try:
        holder = Holder(ports)
        holder.open()
        holder.report({"ready": holder.queue_num})
        holder.run(floor, python)
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
