"""The query hold (opt-in, ``--hold``): the kernel holds each DNS query this host sends
until its sender is known (Linux NFQUEUE), so even a client that exits a microsecond
after its answer is named ('held').

Safe by construction:
- the rule is APPENDED to the filter table's OUTPUT chain (iptables and ip6tables),
  and only when the chain's policy is ACCEPT: every rule already in the chain (a
  ``-p udp --dport 53 -j REJECT`` say) applies first, and the hold's ACCEPT verdict,
  or ``--queue-bypass`` once nobody reads the queue (netsql killed with -9), does what
  the policy would have done anyway. Rules appended after netsql's own (while it runs)
  are checked every second and netsql's rule is moved back to the end.
- verdicts come from a helper process in a session of its own (holder.py): Ctrl-Z or
  SIGSTOP of netsql's process group does not reach it. When the helper itself is
  stopped or dies, netsql removes the rules within ``STALL_SECONDS`` (fail-open;
  queries held at that moment are dropped by the kernel and the client retries).
  Only when netsql and its helper are both stopped do queries wait (until either
  resumes, or the 4,096-packet queue fills, after which they pass unheld).
- a flood (more than FLOOD_PER_SECOND held queries a second, or a backlog of more than
  holder.FLOOD_BACKLOG, from anyone) pauses the lookups for FLOOD_PAUSE seconds:
  queries pass at once, counted (capture_stats hold_passed, hold_paused), and the
  first pause is warned about.
Needs root and iptables (with the NFQUEUE target).

Rules and queues belong to a network namespace: a capture of several namespaces runs
one hold per namespace, each with its helper started inside it (``handle``), and
netsql's own iptables calls for that hold run there too.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from netsql import netns

FLOOD_PER_SECOND = 3000
FLOOD_PAUSE = 10.0
STALL_SECONDS = 1.0
RULE_TAG = "netsql-hold"
TOOLS = ("iptables", "ip6tables")

Key = tuple[str, str, int, str, int]


class HoldError(Exception):
    pass


def bound_queues() -> set[int]:
    """Queue numbers some process is reading now (in this network namespace)."""
    try:
        with open("/proc/net/netfilter/nfnetlink_queue") as f:
            return {int(line.split()[0]) for line in f if line.strip()}
    except OSError:
        return set()


def _tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t)]


def _listed(tool: str) -> list[str]:
    res = subprocess.run([tool, "-w", "-S", "OUTPUT"], capture_output=True, text=True)
    return res.stdout.splitlines()


def hold_rules(ports: Sequence[int], queue_num: int) -> list[list[str]]:
    """The rules to append, per tool; HoldError when a tool is missing or a chain's
    policy is not ACCEPT (the hold's ACCEPT verdict would then open the firewall)."""
    tools = _tools()
    if os.geteuid() != 0 or not tools:
        raise HoldError("--hold needs root and iptables")
    out = []
    for tool in tools:
        if "-P OUTPUT ACCEPT" not in _listed(tool):
            raise HoldError(f"--hold refused: the {tool} OUTPUT policy is not ACCEPT")
        for proto in ("udp", "tcp"):
            for port in ports:
                syn = ["--tcp-flags", "SYN,ACK", "SYN"] if proto == "tcp" else []
                out.append([tool, "OUTPUT", "-p", proto, "--dport", str(port), *syn,
                            "-m", "comment", "--comment", RULE_TAG, "-j", "NFQUEUE",
                            "--queue-num", str(queue_num), "--queue-bypass"])
    return out


def delete_rules(rules: list[list[str]]) -> None:
    for rule in rules:
        subprocess.run([rule[0], "-w", "-D", *rule[1:]], capture_output=True)


def purge_stale() -> None:
    """Remove netsql's rules whose queue nobody reads (a helper killed with -9; they
    only let packets pass, but are untidy)."""
    live = bound_queues()
    for tool in _tools():
        for line in _listed(tool):
            words = line.split()
            if RULE_TAG in words and "--queue-num" in words and words[:2] == ["-A", "OUTPUT"]:
                if int(words[words.index("--queue-num") + 1]) not in live:
                    subprocess.run([tool, "-w", "-D", *words[1:]], capture_output=True)


def keep_last(rules: list[list[str]]) -> None:
    """Move netsql's rules back to the end of OUTPUT if rules were appended after them."""
    for tool in {r[0] for r in rules}:
        listed = _listed(tool)
        tail = [line for line in listed if line.startswith("-A OUTPUT")]
        mine = [line for line in tail if RULE_TAG in line.split()]
        if mine and tail[-len(mine):] != mine:
            for rule in (r for r in rules if r[0] == tool):
                subprocess.run([tool, "-w", "-D", *rule[1:]], capture_output=True)
                subprocess.run([tool, "-w", "-A", *rule[1:]], capture_output=True)


class QueryHold:
    """The hold's helper process, its reports and its watchdog (in netsql)."""

    def __init__(self, on_held: Callable[[Key, int, int, str | None], None],
                 ports: Sequence[int] = (53,), handle: str | None = None,
                 netns: int | None = None) -> None:
        self.on_held = on_held
        self.ports = list(ports)
        #: The namespace held (netns.call_in's handle and inode; None: netsql's own).
        self.handle, self.netns = handle, netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.queue_num: int | None = None
        self.rules: list[list[str]] = []
        self.counts: dict[str, float] = {}
        self.error: str | None = None  # why the hold ended early
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 10.0) -> None:
        """Start the helper and wait until its rules are in place (HoldError if not)."""
        # Refuse early: no root, no iptables, policy not ACCEPT.
        self._in_ns(lambda: hold_rules(self.ports, 0))
        self.proc = self._in_ns(lambda: subprocess.Popen(  # the helper starts in the namespace
            [sys.executable, "-m", "netsql.capture.holder", *map(str, self.ports)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True))
        assert self.proc.stdout is not None
        out = self.proc.stdout
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([out], [], [], left)[0]:
                raise HoldError("the hold's helper did not start in time")
            line = out.readline()
            if not line:
                raise HoldError("the hold's helper exited at start")
            msg = json.loads(line)
            if "error" in msg:
                raise HoldError(str(msg["error"]))
            if "ready" in msg:
                self.queue_num = int(msg["ready"])
                break
        queue_num = self.queue_num
        self.rules = self._in_ns(lambda: hold_rules(self.ports, queue_num))
        for target in (self._read, self._watch):
            t = threading.Thread(target=target, name="netsql-hold", daemon=True)
            t.start()
            self._threads.append(t)

    def _in_ns(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` in the held namespace (its subprocesses are born there)."""
        return netns.call_in(self.handle, fn, expect=self.netns)

    def _delete(self) -> None:
        rules = self.rules
        try:
            self._in_ns(lambda: delete_rules(rules))
        except OSError:
            pass  # the namespace is gone, and its rules with it

    def stats(self) -> dict[str, float]:
        return {k: v for k, v in self.counts.items() if k != "dropped_reports"}

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if "key" in msg:
                t, client, cport, server, sport = msg["key"]
                self.on_held((t, client, cport, server, sport), msg["inode"], msg["pid"],
                             msg["comm"])
            elif "stats" in msg:
                self.counts = msg["stats"]

    def _watch(self) -> None:
        """Fail open when the helper is stopped or gone; keep the rules last."""
        stalled_since: float | None = None
        last_check = 0.0
        while not self._stop.wait(0.2):
            proc = self.proc
            if proc is None:
                return
            now = time.monotonic()
            if proc.poll() is not None or _stopped(proc.pid):
                stalled_since = stalled_since or now
                if now - stalled_since >= STALL_SECONDS or proc.poll() is not None:
                    self._delete()
                    self.error = "the hold's helper stopped or died: queries pass unheld"
                    return
                continue
            stalled_since = None
            if now - last_check >= 1.0:
                last_check = now
                try:
                    self._in_ns(partial(keep_last, self.rules))
                except OSError:
                    pass  # the namespace is going away

    def stop(self) -> None:
        self._stop.set()
        proc = self.proc
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()  # the helper removes its rules and exits
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._delete()  # gone already, unless the helper could not
        self.rules = []
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        self.proc = None


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False
