"""The recorder behind `netsql serve --record DIR`: connection lives, process lives and
DNS transactions, flushed to the history tree (store.py) every ``flush_seconds``.

How each is seen (docs/history.md says what each case can and cannot show):
- connections: a sock_diag dump of each network namespace (connected UDP sockets every
  ``poll_seconds``, TCP as often as the CPU budget allows); a connection is one life
  from the first poll or notification that shows it to the one that shows it gone.
  What the kernel reports as it happens (kernelwatch.py, root) dates them: a TCP
  connection's SYN on the wire is its first_seen, its FIN or RST its last_seen, and a
  local connect is looked up (with its process) the moment its SYN leaves; the destroy
  notifications add the connections that lived between two polls, with their last
  counters. The owning process is looked up when a connection is first seen.
- processes: every poll lists /proc; a process life runs from its start time to the
  first poll that finds it gone (``exited`` from a process event source, when one is
  given, ends it at once and adds the ones that lived between polls).
- dns_queries: the transactions a capture finished (answered, or given up on).

A life still going is written again at each flush with its newest values; the
history views keep the newest observation of each.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from netsql import procfs
from netsql.collect import Collection, State
from netsql.history.connlives import ConnectionLives
from netsql.history.dnsfeed import dns_row
from netsql.history.kernelwatch import KernelWatch
from netsql.history.lives import ConnKey, Life, columns_of, process_facts, update
from netsql.history.store import Store
from netsql.history.tables import CONNECTIONS, DNS_QUERIES, PROCESSES

#: The share of a core each kind of poll may use (the TCP dumps; the processes and UDP
#: dumps): a poll that costs more makes the next one of its kind wait longer. TCP
#: connections are dated by their SYN and FIN on the wire (kernelwatch.py), so a TCP
#: poll only finds what began before the recorder or was not seen on the wire.
CPU_BUDGET = 0.01
#: A life still going whose values did not change is written again after this long.
REFRESH_SECONDS = 600.0


@dataclass
class Recorder(ConnectionLives):
    store: Store
    flush_seconds: float = 60.0
    poll_seconds: float = 1.0
    #: The shortest spacing of TCP dumps (None: poll_seconds); the CPU budget may make
    #: it longer.
    tcp_poll_seconds: float | None = None
    #: ([final=True]) -> DNS records (capture/tracker.DnsRecord-like) finished since the
    #: last call (dnsfeed.DnsFeed).
    dns_source: Callable[..., Iterable[Any]] | None = None
    #: (net_namespace, address) -> the name DNS answered for it there, or None.
    names: Callable[[int, str], str | None] | None = None
    clock: Callable[[], float] = time.time
    conns: dict[ConnKey, Life] = field(default_factory=dict)
    procs: dict[tuple[int, float], Life] = field(default_factory=dict)
    pending_dns: list[dict[str, Any]] = field(default_factory=list)
    state: State = field(default_factory=State)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Held by a poll or a flush's dump (sock_diag sockets are not shared).
    polling: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    #: Connections that ended -> when: a later notification of their destruction
    #: brings their last counters, not a new life.
    ended: dict[ConnKey, float] = field(default_factory=dict)
    #: Socket inode -> key of the connections the last poll saw held; pid -> key of
    #: the live processes.
    live: dict[int, ConnKey] = field(default_factory=dict)
    live_pids: dict[int, tuple[int, float]] = field(default_factory=dict)
    last_poll: float = 0.0
    #: Seconds between polls now (poll_seconds, more when a poll costs more than the
    #: CPU budget allows), and between TCP dumps.
    interval: float = 1.0
    tcp_interval: float = 1.0
    #: The process event source (capture.procevents.ProcWatch) while it runs.
    proc_watch: Any = None
    #: One sock_diag socket per namespace, kept open between polls.
    diag_socks: dict[int, Any] = field(default_factory=dict)
    #: Destroy notifications and TCP starts and ends, as they happen (run()).
    kernel: KernelWatch = field(init=False)
    #: TCP starts (SYN) and ends (FIN, RST) seen on the wire, by connection key, until
    #: a poll, a lookup or a notification finds their connection.
    starts: OrderedDict[ConnKey, float] = field(default_factory=OrderedDict)
    stops: OrderedDict[ConnKey, float] = field(default_factory=OrderedDict)
    #: Starts and ends forgotten before their connection was found (MAX_EDGES).
    edges_evicted: int = 0
    #: The inodes of ``live`` that are UDP (a UDP-only poll looks at these alone).
    udp_live: set[int] = field(default_factory=set)
    #: When /proc was last read whole for namespaces (namespaces()).
    ns_scanned: float = 0.0
    ns_known: dict[int, str] = field(default_factory=dict)
    #: Inodes of connections found at their SYN whose owner is left to the next poll.
    unnamed: set[int] = field(default_factory=set)
    #: Live connections whose FIN or RST left, by key -> when: each poll asks the
    #: kernel whether their socket is closed (gone, or no longer held), and ends them at
    #: that segment, whatever the TCP polls' spacing and even if the kernel's destroy
    #: notification is lost.
    closing: dict[ConnKey, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kernel = KernelWatch(self, clock=self.clock)

    @property
    def watching(self) -> threading.Event:
        """Set once destroy notifications are being received in every namespace."""
        return self.kernel.watching

    # -- polling ---------------------------------------------------------------------

    def poll(self, tcp: bool = True) -> None:
        """One pass: processes, then connections (whose owners it names): UDP, and TCP
        when ``tcp``; then the DNS transactions finished since."""
        self.poll_lives(tcp)
        with self.lock:
            self._take_dns()

    def poll_lives(self, tcp: bool = True) -> None:
        """Processes and connections. /proc and sock_diag are read outside the lock, so
        the kernel watcher (a connect's lookup, a destroy) never waits for a slow pass."""
        with self.polling:  # one pass at a time (serve's statements poll too)
            now = self.clock()
            coll = Collection(state=self.state)
            with self.lock:
                before = set(self.live_pids)
            alive = set(procfs.pids_of(coll))
            with self.lock:
                new = alive - self.live_pids.keys()
            facts = process_facts(coll, new) if new else []
            with self.lock:
                self._begin(facts, now)
                # (not those the process events began since /proc was listed)
                for pid in (before & self.live_pids.keys()) - alive:
                    self._end_process(self.procs[self.live_pids.pop(pid)], now)
            self._poll_connections(coll, now, ("tcp", "udp") if tcp else ("udp",))
            self._confirm_ends()

    def _begin(self, facts: list[dict[str, Any]], now: float, exec_: bool = False) -> None:
        for row in facts:
            key = (row["pid"], row["start_time"])
            old = self.live_pids.get(row["pid"])
            if old is not None and old != key:  # the pid was reused: that life ended
                self._end_process(self.procs[old], now)
            life = self.procs.get(key)
            if life is None:
                self.procs[key] = Life(dict(row, last_seen=now))
            elif exec_:  # the same process runs a new program: its newest facts
                life.values.update(row)
            self.live_pids[row["pid"]] = key

    # -- process events (the kernel's proc connector), when root ------------------------

    def watch_processes(self) -> str | None:
        """Follow exec and exit events, so a process that lives between two polls is
        recorded too, and an exit ends its life at once; the polls stay as the
        fallback. Returns why not, when the kernel refuses."""
        from netsql.capture.procevents import ProcEventsError, ProcWatch

        watch = ProcWatch(keep_exited=16, on_exec=self._exec_event, on_exit=self._exit_event)
        try:
            watch.start()
        except ProcEventsError as exc:
            return str(exc)
        self.proc_watch = watch
        return None

    @staticmethod
    def _wall(ts_ns: int) -> float:
        return time.time() - (time.monotonic_ns() - ts_ns) / 1e9

    def _exec_event(self, pid: int, ts_ns: int) -> None:
        """Read the new program's facts at once (it may be gone in a millisecond)."""
        facts = process_facts(Collection(state=self.state), {pid})
        with self.lock:
            self._begin(facts, self._wall(ts_ns), exec_=True)

    def _exit_event(self, pid: int, ts_ns: int) -> None:
        self.exited(pid, self._wall(ts_ns))

    @staticmethod
    def _end_process(life: Life, when: float) -> None:
        life.values["end_time"] = life.values["last_seen"] = when
        life.ended = True

    def exited(self, pid: int, when: float) -> None:
        """A process event source saw ``pid`` exit at ``when``."""
        with self.lock:
            key = self.live_pids.pop(pid, None)
            if key is not None:
                self._end_process(self.procs[key], when)

    # -- DNS -------------------------------------------------------------------------

    def _take_dns(self, final: bool = False) -> None:
        """The DNS transactions finished since; ``final``: every one there is (the
        recording ends), unanswered ones not left to settle."""
        if self.dns_source is None:
            return
        for rec in self.dns_source(final=True) if final else self.dns_source():
            row = dns_row(rec)
            row["container_id"] = self._process_of(row["pid"]).get("container_id")
            self.pending_dns.append(row)

    # -- flushing --------------------------------------------------------------------

    def flush(self) -> int:
        """Write the lives that began, changed or ended since the last flush (and the
        unchanged ones last written REFRESH_SECONDS ago), then the DNS rows; forget the
        ended lives. Returns the rows written."""
        with self.polling:
            live = self._dump(Collection(state=self.state), info=True) if self.conns else {}
        now = self.clock()
        with self.lock:
            for inode, key in self.live.items():
                got = live.get(inode)
                if got is not None:
                    update(self.conns[key], got[2], self.last_poll)
            for pkey in self.live_pids.values():
                self.procs[pkey].values["last_seen"] = self.last_poll
            conns = self._due(self.conns, now)
            procs = self._due(self.procs, now)
            dns, self.pending_dns = self.pending_dns, []
        for recorded, rows in ((CONNECTIONS, conns), (PROCESSES, procs), (DNS_QUERIES, dns)):
            if rows:
                self.store.write(recorded, columns_of(recorded.column_names, rows))
        return len(conns) + len(procs) + len(dns)

    @staticmethod
    def _due(lives: dict[Any, Life], now: float) -> list[dict[str, Any]]:
        out = []
        for key in list(lives):
            life = lives[key]
            sig = life.changes()
            if life.written is None or sig != life.signature or \
                    now - life.written >= REFRESH_SECONDS:
                out.append(dict(life.values))
                life.written, life.signature = now, sig
            if life.ended:
                del lives[key]
        return out

    # -- running ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll and flush until ``stop`` is set; then flush once more."""
        watcher = threading.Thread(target=self.kernel.run, args=(stop,), daemon=True,
                                   name="netsql-record-kernel")
        watcher.start()
        why = self.watch_processes()
        if why is not None:
            self._error(f"{why}: processes are recorded by polling /proc only")
        next_flush = time.monotonic() + self.flush_seconds
        next_tcp = 0.0
        startup = True  # every process and connection is new once: not a poll's cost
        while not stop.is_set():
            used = time.thread_time()
            try:
                tcp = time.monotonic() >= next_tcp
                self.poll_lives(tcp)
                # Keep within the CPU budget: a host with many namespaces and sockets
                # (the kernel walks every socket once per namespace) is polled less
                # often, never more often than poll_seconds. The DNS rows are taken
                # every pass whatever they cost: that is the traffic's, not polling's.
                used = time.thread_time() - used
                with self.lock:
                    self._take_dns()
                if startup:
                    startup = False
                    next_tcp = time.monotonic() + self.poll_seconds
                elif tcp:
                    self.tcp_interval = max(self.tcp_poll_seconds or self.poll_seconds,
                                            used / CPU_BUDGET)
                    next_tcp = time.monotonic() + self.tcp_interval
                else:
                    self.interval = max(self.poll_seconds, used / CPU_BUDGET)
                if time.monotonic() >= next_flush:
                    self.flush()
                    self.store.retain()
                    self.store.compact()
                    next_flush = time.monotonic() + self.flush_seconds
            except Exception as exc:  # a bad pass (a full disk, say) must not end it
                self._error(f"recording: {type(exc).__name__}: {exc}")
            stop.wait(self.interval)
        if self.proc_watch is not None:
            self.proc_watch.stop()
            self.proc_watch = None
        with self.lock:
            self._take_dns(final=True)
        self.flush()
        with self.polling:
            for sock in self.diag_socks.values():
                sock.close()
            self.diag_socks.clear()
