"""``netsql serve``: a resident engine and DNS capture behind a Unix socket
(docs/serve.md; the client side is client.py).

Clients are served concurrently, a thread each, each command in a fresh DuckDB
connection (a view one command makes is not seen by the next), sharing what outlives a
command: the live DNS capture (so ``dns_queries`` holds what was asked before the
one-liner ran) and the /proc caches. A command runs in the client's directory with the
client's variables (the process has one of each: commands of the same directory and
variables run together, another waits up to WAIT seconds, then is declined and runs in
the client, which says why; netsql.serve.contexts); its output streams back as it is
written, so a slow reader holds only its own thread. When the client goes away
(Ctrl-C), the running statement is interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO, cast

from netsql import __version__
from netsql.collect import State
from netsql.context import (
    DNS_BUFFER,
    Env,
    ExitStatus,
    Parser,
    UsageError,
    notice,
    port,
    positive,
    seconds,
    size,
)
from netsql.dbconfig import configured_safe
from netsql.flags import netns_spec
from netsql.serve import client, scope, spares, wire
from netsql.serve.contexts import Contexts
from netsql.sockpath import socket_path

#: How long a command may wait for others of another directory to finish, and how many
#: commands run at once; past either, the client runs it itself.
WAIT = 1.0
MAX_CLIENTS = 16


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="netsql serve", add_help=False,
                description="Keep netsql resident: one-liners (netsql -e) run here, "
                "faster, and see the DNS captured since it started.")
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    p.add_argument("--socket", metavar="PATH", help="listen on PATH (default: "
                   "$NETSQL_SOCKET, else /run/netsql/netsql.sock for root, else "
                   "$XDG_RUNTIME_DIR/netsql/netsql.sock)")
    p.add_argument("--no-capture", action="store_true", help="do not capture DNS")
    p.add_argument("-i", "--interface", action="append", metavar="IFACE",
                   help="capture on IFACE only (repeatable; default: every interface)")
    p.add_argument("--dns-port", action="append", type=port, metavar="PORT",
                   help="DNS server port to decode (repeatable; default 53)")
    p.add_argument("--dns-buffer", type=positive, default=DNS_BUFFER, metavar="N",
                   help=f"keep at most N DNS transactions (default {DNS_BUFFER})")
    p.add_argument("--netns", action="append", type=netns_spec, metavar="NS",
                   help="capture in network namespace NS only: its inode, `ip netns` name, "
                   "or a pid in it (repeatable; default: every namespace)")
    p.add_argument("--hold", action="store_true", help="hold each DNS query this host "
                   "sends until its process is known (an iptables rule; docs/dns.md)")
    rec = p.add_argument_group("recording (docs/history.md)")
    rec.add_argument("--record", metavar="DIR", help="record DNS transactions, connection "
                     "lives and process lives of every namespace into DIR (Parquet; "
                     "query it with netsql --history DIR)")
    rec.add_argument("--flush", type=seconds, default=60.0, metavar="SECONDS",
                     help="write what was recorded every SECONDS (default 60): a kill -9 "
                     "loses at most that much")
    rec.add_argument("--retain", type=positive, default=30, metavar="DAYS",
                     help="drop this host's date partitions older than DAYS (default 30)")
    rec.add_argument("--max-size", type=size, metavar="SIZE",
                     help="drop this host's oldest days while its tree is larger than SIZE "
                     "(e.g. 2G; default: no limit)")
    return p


def main(argv: Sequence[str], env: Env) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        env.error(f"{exc} (see netsql serve --help)")
        return ExitStatus.USAGE
    if args.help:
        parser.print_help(env.stdout)
        return ExitStatus.SUCCESS
    path = os.path.abspath(args.socket or socket_path())
    # A client that hangs up must not end the server (cli.main set SIGPIPE's default).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        listener = _listen(path)
    except (OSError, ValueError) as exc:
        env.error(f"cannot serve on {path}: {exc}")
        return ExitStatus.ERROR
    base = State()
    capture = None
    status: int = ExitStatus.SUCCESS
    recording: tuple[threading.Event, threading.Thread] | None = None
    try:
        if not args.no_capture:
            from netsql.launch import new_capture, start_capture

            capture = new_capture(args)
            base.capture = capture
            problem = start_capture(capture)
            if problem is not None:  # dns_queries says why; the rest works
                env.warn(f"no DNS capture: {problem}")
        if args.record:
            recording = _start_recording(args, base, env)
        spares.warm_up()
        env.notice(f"serving on {path} (pid {os.getpid()})")
        env.stderr.flush()
        contexts = Contexts()
        slots = threading.BoundedSemaphore(MAX_CLIENTS)
        _SPARES.refill()
        wake = _signal_wakeup()
        listener.setblocking(False)  # accepted connections are blocking (socket.accept)
        while True:
            # A signal may be delivered to any thread (DuckDB's workers block none), and
            # then accept() would go on waiting: the handler's wake-up byte ends the
            # select, and the handler itself runs (SystemExit) right after it returns.
            ready, _, _ = select.select([listener.fileno(), wake], [], [])
            if wake in ready:
                with contextlib.suppress(OSError):
                    os.read(wake, 512)
                continue
            try:
                conn, _ = listener.accept()
            except BlockingIOError:  # the client gave up between select and accept
                continue
            thread = threading.Thread(target=_client, name="netsql-serve-client",
                                      args=(conn, base, env, _SPARES.take(), contexts,
                                            slots), daemon=True)
            _THREADS.add(thread)
            thread.start()
    except KeyboardInterrupt:
        status = ExitStatus.INTERRUPTED
        return status
    except SystemExit as exc:  # SIGTERM, SIGHUP (netsql.signals)
        status = int(exc.code) if isinstance(exc.code, int) else ExitStatus.ERROR
        raise
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        if recording is not None:  # the last rows are written before the capture goes
            recording[0].set()
            recording[1].join(timeout=args.flush + 30)
        if capture is not None:
            capture.close()
        _stop_clients(status)


def _signal_wakeup() -> int:
    """The read end of a pipe that gets a byte whenever a signal arrives, in whichever
    thread the kernel delivered it (signal.set_wakeup_fd)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    return r


#: Client threads, and the state of the commands they run (to interrupt at the end).
_THREADS: set[threading.Thread] = set()
_RUNNING: dict[int, State] = {}


def _stop_clients(status: int) -> None:
    """Interrupt the commands still running and wait for them a little; a thread still
    inside DuckDB when the interpreter ends would abort the process, so then end at once
    (the socket and the capture are cleaned up by now)."""
    for state in list(_RUNNING.values()):
        if state.cancel is not None:
            state.cancel.set()
        if state.interrupt is not None:
            with contextlib.suppress(Exception):
                state.interrupt()
    deadline = time.monotonic() + 2.0
    for thread in list(_THREADS):
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in _THREADS):
        import sys

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(status)


def _start_recording(args: argparse.Namespace, base: State, env: Env
                     ) -> tuple[threading.Event, threading.Thread]:
    """The recorder (netsql/history/recorder.py) polling and flushing in a thread of its
    own, fed by the DNS capture when there is one."""
    from netsql.history.dnsfeed import DnsFeed
    from netsql.history.recorder import Recorder
    from netsql.history.store import Store

    store = Store(args.record, retain_days=args.retain, max_bytes=args.max_size)
    recorder = Recorder(store, flush_seconds=args.flush)
    if base.capture is not None:
        recorder.dns_source = DnsFeed(base.capture.tracker)
        capture = base.capture
        # A connection is named from its own namespace's answers (nsjoin).
        recorder.names = lambda ns, address: capture.name_for(address, ns)
    base.recorder = recorder
    base.history = str(store.root)
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), daemon=True,
                              name="netsql-record")
    thread.start()
    env.notice(f"recording into {store.root} (host={store.host}, a flush every "
               f"{args.flush:g} s)")
    return stop, thread


def _listen(path: str) -> socket.socket:
    """A listening socket at ``path`` that only this user can reach."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.lexists(path):
        problem = client.untrusted(path)
        if problem is not None:  # never remove what is not our own socket
            raise ValueError(problem)
        if client.connect(path, timeout=1.0) is not None:
            raise ValueError("another netsql serve is listening there")
        os.unlink(path)  # our socket, left by a server that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    problem = client.untrusted(path)
    if problem is not None:
        sock.close()
        os.unlink(path)
        raise ValueError(problem)
    sock.listen(16)
    return sock


_SPARES = spares.Spares()


_LOG = threading.Lock()


def _log(log: Env, line: str, kind: str = "") -> None:
    """One line of the server's log (client threads write it concurrently)."""
    with _LOG:
        notice(log.stderr, line, kind)
        log.stderr.flush()


def _client(conn: socket.socket, base: State, log: Env, spare: Any,
            contexts: Contexts, slots: threading.BoundedSemaphore) -> None:
    """One client, in its own thread."""
    with conn:
        try:
            _serve_one(conn, base, log, spare, contexts, slots)
        except Exception as exc:  # one command's failure never ends the server
            _log(log, f"a command failed: {type(exc).__name__}: {exc}", "warning")
    try:  # the client has its answer: make the next command's engine
        _SPARES.refill()
    except Exception as exc:  # (the next command makes its own)
        _log(log, f"no spare engine: {type(exc).__name__}: {exc}", "warning")
    finally:
        _THREADS.discard(threading.current_thread())


def _serve_one(conn: socket.socket, base: State, log: Env, spare: Any = None,
               contexts: Contexts | None = None,
               slots: threading.BoundedSemaphore | None = None) -> None:
    started = time.monotonic()
    try:
        uid = client.peer_uid(conn)
        if uid != os.geteuid():
            _log(log, f"refused a client of uid {uid}", "warning")
            return
        request = wire.read_request(conn, deadline=time.monotonic() + 10)
    except (OSError, ValueError) as exc:
        _log(log, f"bad request: {exc}", "warning")
        return
    if not wire.well_formed(request):
        with contextlib.suppress(OSError):
            client.send(conn, {"declined": f"netsql {__version__} serves here"})
        return
    contexts = contexts or Contexts()
    if slots is not None and not slots.acquire(blocking=False):
        _decline(conn, log, uid, f"the resident netsql runs {MAX_CLIENTS} commands already")
        return
    try:
        with contexts.enter(request, WAIT) as entered:
            if not entered:
                _decline(conn, log, uid, "the resident netsql is busy with commands run "
                         "from another directory or environment")
                return
            if configured_safe():  # the client's config locks it: this engine is not
                with contextlib.suppress(OSError):  # (the full client path never asks)
                    client.send(conn, {"declined": "the config file sets safe"})
                return
            _run_one(conn, base, log, spare, request, uid, started)
    finally:
        if slots is not None:
            slots.release()


def _decline(conn: socket.socket, log: Env, uid: int, why: str) -> None:
    """Send the client back to run the command itself, telling it why."""
    with contextlib.suppress(OSError):
        client.send(conn, {"declined": why, "say": True})
    _log(log, f"declined uid {uid}: {why}")


def _run_one(conn: socket.socket, base: State, log: Env, spare: Any,
             request: dict[str, Any], uid: int, started: float) -> None:
    box = wire.Outbox(conn, request.get("raw"))
    out = wire.Frames(box, "out", bool(request.get("stdout_isatty")))
    err = wire.Frames(box, "err", False)
    # A client in other namespaces is answered for its own, or refused (serve/scope.py).
    here, there = scope.place_of("self"), scope.place_of(scope.peer_pid(conn))
    limits = scope.Scope(here, there, base.capture)
    refused = limits.refusal(str(request["cwd"]))
    if refused is not None:
        with contextlib.suppress(OSError):
            notice(cast(TextIO, err), refused, "error")
            box.flush()
            client.send(conn, {"exit": int(ExitStatus.ERROR)})
        _log(log, f"refused uid {uid} (pid {there.pid}, net namespace {there.net}, "
             f"pid namespace {there.pidns}): {refused[:120]}")
        return
    # The command brings its own files and settings; the capture and caches are kept.
    state = base.for_command(cancel=threading.Event(), spare_engine=spare,
                             scope=limits if limits.needed else None)
    env = Env(stdin=io.StringIO(request.get("stdin") or ""), stdout=cast(TextIO, out),
              stderr=cast(TextIO, err),
              stdin_isatty=request.get("stdin") is None,
              stdout_isatty=bool(request.get("stdout_isatty")),
              width=request.get("width") or 1_000_000)
    status: int = ExitStatus.ERROR
    _RUNNING[threading.get_ident()] = state
    wake_r, wake_w = os.pipe()  # ends the watcher at once when the command is done
    watcher = threading.Thread(target=_watch_client, args=(conn, state, wake_r), daemon=True)
    watcher.start()
    logged = False

    def served(status: int, went_away: bool) -> None:
        """The log line, written before the client has its exit status (a client exits
        at once then, and whoever ran it may read the log right after)."""
        nonlocal logged
        if logged:
            return
        logged = True
        if went_away:  # the client went away (Ctrl-C there) before the command ended
            status = ExitStatus.INTERRUPTED
        argv = " ".join(str(a) for a in request.get("argv", []))
        _log(log, f"served uid {uid}: {argv[:200]!r} -> {int(status)} in "
             f"{time.monotonic() - started:.3f} s")

    try:
        status = _run(request["argv"], env, state)
        # Decided now: once the client has its exit status it hangs up, and the
        # watcher would take that for a client that went away mid-command.
        went_away = _went_away(conn, state)
        box.flush()
        served(status, went_away)
        client.send(conn, {"exit": int(status)})
    except Exception as exc:  # the client went away, its directory is gone, or DuckDB
        went_away = _went_away(conn, state)
        with contextlib.suppress(OSError):  # was interrupted between statements
            if not logged:
                notice(cast(TextIO, err), str(getattr(exc, "strerror", None) or exc),
                       "error")
                box.flush()
            served(ExitStatus.ERROR, went_away)
            client.send(conn, {"exit": int(ExitStatus.ERROR)})
        served(ExitStatus.ERROR, went_away)
    finally:
        _RUNNING.pop(threading.get_ident(), None)
        if spare is not None:  # its DuckDB (memory, worker threads) goes now, not at
            _SPARES.learn(spare)  # some later garbage collection
            with contextlib.suppress(Exception):
                spare.con.close()
        os.write(wake_w, b"x")
        watcher.join()
        os.close(wake_r)
        os.close(wake_w)


def _went_away(conn: socket.socket, state: State) -> bool:
    """Whether the client hung up before its command ended: the watcher saw it, or the
    connection reads as closed now (the watcher may not have woken yet)."""
    if state.cancel is not None and state.cancel.is_set():
        return True
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _run(argv: list[str], env: Env, state: State) -> ExitStatus:
    from netsql.flags import parse
    from netsql.run import run

    args = parse(argv, env)
    if isinstance(args, ExitStatus):
        return args
    return run(args, argv, env, resident=state)


def _watch_client(conn: socket.socket, state: State, wake: int) -> None:
    """Interrupt the running statement when the client hangs up (Ctrl-C there); ends
    when ``wake`` becomes readable (the command is done)."""
    while True:
        try:
            ready, _, _ = select.select([conn.fileno(), wake], [], [])
            if wake in ready:
                return
            data = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except (OSError, ValueError):
            data = b""
        if data:
            time.sleep(0.2)  # the client wrote more (it should not): keep watching
            continue
        if state.cancel is not None:
            state.cancel.set()
        if state.interrupt is not None:
            # The command may have ended (its connection closed) meanwhile.
            with contextlib.suppress(Exception):
                state.interrupt()
        return
