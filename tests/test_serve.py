"""netsql serve: one-liners run in a resident netsql through its Unix socket, with the
same output and exit status as run locally; a capture that ran before the one-liner;
trust checks both ways; a client that hangs up interrupts its statement."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netsql import __version__
from netsql.serve import client as resident
from tests.conftest import need, netsql_cmd, run_netsql
from tests.netlab import APP_V4, Lab, lab, wait_for

__all__ = ["lab"]


class Server:
    def __init__(self, proc: subprocess.Popen[str], path: str, log: Path) -> None:
        self.proc, self.path, self.log = proc, path, log

    def served(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if "served uid" in line]

    def run(self, *args: str, input: str | None = None, cwd: str | None = None,
            netns: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, NETSQL_SOCKET=self.path)
        env.pop("NO_COLOR", None)
        inside = ["ip", "netns", "exec", netns] if netns else []
        return subprocess.run([*inside, *netsql_cmd(*args)], input=input or "",
                              capture_output=True, text=True, timeout=60, env=env, cwd=cwd)


def start(path: str, log: Path, *args: str, netns: str | None = None) -> Server:
    cmd = netsql_cmd("serve", "--socket", path, *args)
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True,
                            cwd="/")
    for _ in range(200):
        if "serving on" in log.read_text():
            return Server(proc, path, log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("netsql serve did not start: " + log.read_text())


def stop(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert not os.path.exists(server.path)  # it cleans up its socket


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    s = start(str(d / "netsql.sock"), tmp_path / "serve.log", "--no-capture")
    try:
        yield s
    finally:
        stop(s)


CASES = [
    ("--json", "-e", "SELECT 1 AS one, 'a' AS s, [1, 2] AS l, NULL AS n"),
    ("--csv", "-e", "SELECT 2 AS two", "-e", "SELECT 'x,y' AS q"),
    ("--format", "jsonl", "-e", "SELECT count(*) > 0 AS some FROM processes"),
    ("--format", "markdown", "-e", "SELECT protocol FROM sockets WHERE false"),
    ("-e", "SELECT 'wide' AS w"),
    ("-e", "SELEC 1"),  # a syntax error: exit 1
    ("-e", "SELECT * FROM socketz"),  # no such table, with the closest names
    ("-q", "no-such-saved-query"),  # a usage error: exit 2
    ("-q", "listening-ports", "--csv"),
    # Long enough for the server's DuckDB to render it (Spares.RENDER_ROWS), sent as
    # bytes (client.RAW frames); here the Python encoders write it.
    ("--csv", "-e", "SELECT i, 'é' || i AS s, i % 3 = 0 AS b, i / 7 AS d, "
     "TIMESTAMP '2026-01-01' + to_microseconds(i) AS t FROM range(3000) t(i)"),
    ("--format", "jsonl", "-e", "SELECT i, 'é\u2028\"' || i AS s FROM range(3000) t(i)"),
]


def test_same_output_and_status_as_local(server: Server) -> None:
    for case in CASES:
        here = run_netsql("--local", *case)
        there = server.run(*case)
        assert (there.returncode, there.stdout, there.stderr) == (
            here.returncode, here.stdout, here.stderr), case
    assert len(server.served()) == len(CASES)
    # Off, the same command runs here.
    off = run_netsql("-e", "SELECT 3", env={"NETSQL_SOCKET": server.path + ".none"})
    assert off.returncode == 0 and len(server.served()) == len(CASES)


def test_stdin_files_and_the_clients_directory(server: Server, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "q.sql").write_text("SELECT 40 + 2 AS a;\nSELECT 'two' AS b;\n")
    r = server.run("--csv", input="SELECT 'piped' AS p", cwd=str(work))
    assert (r.returncode, r.stdout) == (0, "p\npiped\n")
    r = server.run("--csv", "-f", "q.sql", cwd=str(work))
    assert (r.returncode, r.stdout) == (0, "statement,a,b\n1,42,\n2,,two\n")  # one table
    r = server.run("-e", "COPY (SELECT 7 AS v) TO 'out.csv' (HEADER)", cwd=str(work))
    assert r.returncode == 0, r.stderr
    assert (work / "out.csv").read_text() == "v\n7\n"  # where the client stands
    r = server.run("-f", "missing.sql", cwd=str(work))
    assert r.returncode == 2 and "cannot read missing.sql" in r.stderr
    assert len(server.served()) == 4


def test_hanging_up_interrupts_the_statement(server: Server) -> None:
    env = dict(os.environ, NETSQL_SOCKET=server.path)
    slow = subprocess.Popen(netsql_cmd("-e", "SELECT count(*) FROM range(1000000000000)"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    slow.send_signal(signal.SIGINT)
    assert slow.wait(timeout=10) == 130
    started = time.monotonic()
    r = server.run("--csv", "--no-header", "-e", "SELECT 5")
    assert (r.returncode, r.stdout) == (0, "5\n")
    assert time.monotonic() - started < 10  # the server was not stuck in the statement
    assert "range(1000000000000)" in server.served()[0]
    assert "-> 130 in" in server.served()[0]  # logged as interrupted, not as an error


def raw(path: str, request: object) -> object:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        resident.send(s, request)
        with s.makefile("rb") as f:
            return resident.receive(f)


def test_another_version_is_declined_and_runs_locally(server: Server) -> None:
    answer = raw(server.path, {"protocol": resident.PROTOCOL, "version": "0.0-other",
                               "argv": ["-e", "SELECT 1"]})
    assert isinstance(answer, dict) and "declined" in answer
    assert raw(server.path, {"protocol": 99}) == {"declined": f"netsql {__version__} serves "
                                                              "here"}
    assert server.served() == []


def peer_answers(tmp_path: Path, answers: list[list[object]]
                 ) -> list[subprocess.CompletedProcess[str]]:
    """Run `netsql -e 'SELECT 1'` once per entry of ``answers`` against a listener of
    this test speaking the protocol, which answers each with those frames; the real
    client, on its quick path (netsql/serve/quick.py)."""
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    path = str(d / "netsql.sock")
    argvs: list[object] = []
    requests: list[dict[str, object]] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        listener.settimeout(60)

        def answer() -> None:
            for frames in answers:
                conn, _ = listener.accept()
                with conn, conn.makefile("rb") as f:
                    request = resident.receive(f)
                    argvs.append(request["argv"])
                    requests.append(request)
                    # (a client that gave up on a bad frame may have hung up)
                    with contextlib.suppress(OSError):
                        for frame in frames:
                            if isinstance(frame, bytes):
                                resident.send_raw(conn, frame)
                            else:
                                resident.send(conn, frame)

        peer = threading.Thread(target=answer, daemon=True)
        peer.start()
        # (its stdout UTF-8 whatever the locale: it then asks for its output as bytes)
        env = dict(os.environ, NETSQL_SOCKET=path, PYTHONIOENCODING="utf-8:surrogateescape")
        done = [subprocess.run(netsql_cmd("-e", "SELECT 1"), capture_output=True, text=True,
                               errors="surrogateescape", timeout=60, env=env)
                for _ in answers]
        peer.join(10)
    assert argvs == [["-e", "SELECT 1"]] * len(answers)
    # A client whose stdout takes UTF-8 asks for its output as bytes (RAW frames),
    # encoded with its stdout's error handler.
    assert all(r["raw"] == "surrogateescape" for r in requests), requests
    return done


def test_output_sent_as_bytes_is_written_as_it_is_in_order(tmp_path: Path) -> None:
    """Standard output may come as RAW frames (bytes) between JSON text frames: the
    client writes both, in the order sent, the bytes untouched (here not even UTF-8)."""
    frames: list[object] = [{"out": "a\n"}, "é\n".encode(), {"err": "e\n"}, b"\xff\xfe\n",
                            {"out": "z\n"}, {"exit": 0}]
    with_bytes = peer_answers(tmp_path, [frames])[0]
    assert with_bytes.returncode == 0 and with_bytes.stderr == "e\n"
    assert with_bytes.stdout == "a\né\n\udcff\udcfe\nz\n"  # (as decoded by this test)


def test_the_servers_status_is_passed_on_as_it_is(tmp_path: Path) -> None:
    """The one-liner exits with the status the server sends. netsql serve sends 0, 1 and
    2 (test_same_output_and_status_as_local); any other, as 143 here, is passed on too
    (it read as 1), and one no process can exit with is 1, never a success."""
    sent = [143, 255, 3, 256, -1]
    done = peer_answers(tmp_path, [[{"err": f"status {s}\n"}, {"exit": s}] for s in sent])
    for status, r in zip(sent, done, strict=True):
        assert r.stderr == f"status {status}\n"  # the peer answered, not a local run
    assert [r.returncode for r in done] == [143, 255, 3, 1, 1]


def test_a_malformed_answer_is_one_line_and_status_1(tmp_path: Path) -> None:
    bad: list[list[object]] = [[{"exit": None}], [{"exit": "0"}], [{"exit": True}],
                               [{"out": 5}, {"exit": 0}], [[1, 2]]]
    for r in peer_answers(tmp_path, bad):
        assert r.returncode == 1 and r.stdout == "", r
        assert r.stderr.startswith("netsql: error: the resident netsql failed: a malformed")
        assert r.stderr.count("\n") == 1, r.stderr


def test_sockets_of_other_users_are_not_trusted(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "needs root (to make files owned by another user)")
    nobody = pwd.getpwnam("nobody").pw_uid
    d = Path(tempfile.mkdtemp(prefix="netsql-serve-", dir="/tmp"))  # nobody can reach
    s = start(str(d / "netsql.sock"), tmp_path / "serve.log", "--no-capture")
    try:
        os.chown(s.path, nobody, -1)  # as if another user had made it
        assert "belongs to uid" in (resident.untrusted(s.path) or "")
        r = s.run("--csv", "--no-header", "-e", "SELECT 6")
        assert (r.returncode, r.stdout) == (0, "6\n") and s.served() == []  # ran here
        os.chown(s.path, 0, -1)
        os.chmod(d, 0o777)  # a directory others may write: a socket could be swapped
        assert "written by other users" in (resident.untrusted(s.path) or "")
        assert s.run("-e", "SELECT 6").returncode == 0 and s.served() == []
        # The server's side: a client of another user is turned away (SO_PEERCRED).
        os.chmod(s.path, 0o666)
        # The server may hang up before the probe has even sent: that is a refusal too.
        probe = ("import socket, sys; s = socket.socket(socket.AF_UNIX); "
                 "s.connect(sys.argv[1])\n"
                 "try: s.sendall(b'\\0\\0\\0\\2{}'); print(repr(s.recv(100)))\n"
                 "except (BrokenPipeError, ConnectionResetError): print(repr(b''))")
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        out = subprocess.run([python, "-c", probe, s.path], capture_output=True,
                             text=True, user=nobody, timeout=20)
        assert out.stdout.strip() == "b''", out.stderr
        assert f"refused a client of uid {nobody}" in s.log.read_text()
    finally:
        stop(s)
        shutil.rmtree(d, ignore_errors=True)


def test_a_dead_servers_socket_is_replaced(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    path = str(d / "netsql.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # bound, never listening: what a killed server leaves
    r = run_netsql("--csv", "--no-header", "-e", "SELECT 8", env={"NETSQL_SOCKET": path})
    assert (r.returncode, r.stdout) == (0, "8\n")
    s = start(path, tmp_path / "serve.log", "--no-capture")
    try:
        second = subprocess.run(netsql_cmd("serve", "--socket", path, "--no-capture"),
                                capture_output=True, text=True, timeout=20)
        assert second.returncode == 1 and "another netsql serve" in second.stderr
        assert s.run("-e", "SELECT 9").returncode == 0 and len(s.served()) == 1
    finally:
        stop(s)


def test_dns_asked_before_the_one_liner(lab: Lab, tmp_path: Path) -> None:
    """The founding story with a resident netsql: the name was asked (by a process long
    gone) before anyone ran netsql -e; the one-liner still names the process. The serve
    holds the lab's queries (--hold): this is about what a resident netsql keeps and
    answers; passive naming's rate is counted in test_attribution.py."""
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    s = start(str(d / "netsql.sock"), tmp_path / "serve.log", "--hold", "--netns",
              lab.client, netns=lab.client)
    here = os.stat(f"/run/netns/{lab.client}").st_ino

    def query(sql: str) -> list[dict[str, Any]]:
        # (asked from the server's namespace: a client elsewhere would be refused)
        r = s.run("--json", "-e", sql, netns=lab.client)
        assert r.returncode == 0, r.stderr
        rows: list[dict[str, Any]] = json.loads(r.stdout)
        return rows

    try:
        assert wait_for(lambda: query(
            f"SELECT running FROM capture_stats WHERE net_namespace = {here}"
        ) == [{"running": True}]), "the lab's namespace was not captured"
        # Three lookups, each by a process gone before netsql -e runs.
        for _ in range(3):
            asked = lab.resolve("vmp.boldchat.com:A")
            assert asked.returncode == 0, asked.stderr
        def three() -> list[dict[str, Any]] | None:
            got = query("SELECT pid, process, query, answers, status FROM dns_queries "
                        f"WHERE query = 'vmp.boldchat.com' AND net_namespace = {here}")
            return got if len(got) == 3 else None

        rows = wait_for(three)
        assert rows is not None, "the three queries were not captured"
        assert all(r["answers"] == [APP_V4] and r["status"] == "answered" for r in rows)
        named = [r for r in rows if r["pid"] is not None]
        assert len(named) == 3, rows
        assert all(r["process"].startswith("python") for r in named)  # tests/dnsclient.py
        stats = query(f"SELECT running, queries FROM capture_stats WHERE net_namespace = {here}")
        assert stats[0]["running"] is True and stats[0]["queries"] >= 3
    finally:
        stop(s)


def test_bad_requests_do_not_end_the_server(server: Server) -> None:
    base = {"protocol": resident.PROTOCOL, "version": __version__, "cwd": "/",
            "argv": ["-e", "SELECT 1"]}
    for bad in (dict(base, width="wide"), dict(base, argv="-e SELECT 1"),
                dict(base, env={"HOME": 3}), dict(base, stdin=["x"]),
                dict(base, raw="utf-16"), dict(base, raw=True)):
        assert raw(server.path, bad) == {"declined": f"netsql {__version__} serves here"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # JSON nested too deep
        s.connect(server.path)
        body = b"[" * 100_000
        s.sendall(len(body).to_bytes(4, "big") + body)
        assert s.recv(10) == b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # a frame cut short
        s.connect(server.path)
        s.sendall(b"\0\0\1\0{")
    r = server.run("--csv", "--no-header", "-e", "SELECT 10")
    assert (r.returncode, r.stdout) == (0, "10\n") and len(server.served()) == 1
    assert server.proc.poll() is None


def test_files_only_the_client_can_open_run_locally(server: Server) -> None:
    """/dev/stdin, pipes and /proc/self would be the server's own: such a command runs
    in the client."""
    r = server.run("--csv", "--no-header", "-f", "/dev/stdin", input="SELECT 11;")
    assert (r.returncode, r.stdout) == (0, "11\n") and server.served() == []
    r = server.run("--csv", "--no-header", "--capture", "1", "-e", "SELECT 12")
    assert (r.returncode, r.stdout) == (0, "12\n") and len(server.served()) == 1


def test_serve_removes_only_its_own_dead_socket(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    (d / "data.txt").write_text("keep me")
    r = subprocess.run(netsql_cmd("serve", "--no-capture", "--socket", str(d / "data.txt")),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "is not a socket" in r.stderr
    assert (d / "data.txt").read_text() == "keep me"


def test_a_slow_reader_holds_no_other_client(server: Server, tmp_path: Path) -> None:
    """`netsql -e "SELECT ... FROM range(5000000)" | sleep 40` must not hold `SELECT 1`
    (issue 15 item 15: it hung 25 s when serve ran one command at a time)."""
    import select

    env = dict(os.environ, NETSQL_SOCKET=server.path)
    slow = subprocess.Popen(netsql_cmd("--csv", "-e", "SELECT range AS n FROM range(5000000)"),
                            env=env, cwd="/", stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert slow.stdout is not None
        # Its output has begun to stream: it is being served, and nobody reads on.
        ready, _, _ = select.select([slow.stdout], [], [], 60)
        assert ready, "the slow command never started to answer"
        r = server.run("--csv", "--no-header", "-e", "SELECT 1", cwd="/")
        assert (r.returncode, r.stdout, r.stderr) == (0, "1\n", "")
        # (the server logs a command after its client has the answer: wait for the line)
        deadline = time.monotonic() + 10
        while not any("-e SELECT 1' -> 0" in line for line in server.served()) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("-e SELECT 1' -> 0" in line for line in server.served())
        # Another directory: it cannot share the server's, waits WAIT seconds, is
        # declined and runs here, saying why.
        work = tmp_path / "elsewhere"
        work.mkdir()
        r = server.run("--csv", "--no-header", "-e", "SELECT 2", cwd=str(work))
        assert (r.returncode, r.stdout) == (0, "2\n")
        assert r.stderr == ("netsql: note: running here: the resident netsql is busy with "
                            "commands run from another directory or environment\n")
        assert slow.poll() is None  # still stuck on its unread output
    finally:
        slow.kill()
        slow.wait(10)

    def logged() -> bool:
        return any("range(5000000)" in line and "-> 130" in line for line in server.served())

    deadline = time.monotonic() + 30
    while not logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logged(), server.log.read_text()  # a client that went away: 130, not 1


def imports_of(server: Server, *args: str, cwd: str | None = None) -> tuple[str, set[str]]:
    """What the client loaded (python -X importtime) for a command the server ran."""
    env = dict(os.environ, NETSQL_SOCKET=server.path)
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "netsql", *args],
                       capture_output=True, text=True, timeout=60, env=env, cwd=cwd)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert any(line.startswith("import time:") for line in lines)  # the log is there
    return p.stdout, {line.rsplit("|", 1)[-1].strip() for line in lines
                      if line.startswith("import time:")}


def test_the_client_loads_neither_duckdb_nor_the_engine(server: Server,
                                                        tmp_path: Path) -> None:
    """The client side of a one-liner only hands the command on (issue 16 goal 3)."""
    heavy = ("duckdb", "pyarrow", "psutil", "netsql.engine", "netsql.output",
             "netsql.tables", "netsql.backends.", "netsql.formats", "netsql.capture")

    def engine(modules: set[str]) -> set[str]:
        return {m for m in modules if m.startswith(heavy)}

    # The common one-liner: the quick path (netsql/serve/quick.py), before argparse.
    out, loaded = imports_of(server, "--csv", "--no-header", "-e", "SELECT 42")
    assert out == "42\n" and len(server.served()) == 1
    ours = {m for m in loaded if m.split(".")[0] == "netsql"}
    assert ours <= {"netsql", "netsql.signals", "netsql.serve", "netsql.serve.quick",
                    "netsql.serve.client", "netsql.sockpath"}, ours
    assert "argparse" not in loaded and not engine(loaded)
    # Nor the socket and json modules (4-6 ms: their compiled parts are enough), beyond
    # what this Python loads for nothing (an editable install's finder loads re).
    bare = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"],
                          capture_output=True, text=True, check=True).stderr
    started = {line.rsplit("|", 1)[-1].strip() for line in bare.splitlines()}
    assert not {"socket", "json", "re", "selectors"} & (loaded - started), loaded - started
    # Any other command line: the full client path, still without DuckDB or the engine.
    (tmp_path / "q.sql").write_text("SELECT 43;\n")
    out, loaded = imports_of(server, "--csv", "--no-header", "-f", "q.sql",
                             cwd=str(tmp_path))
    assert out == "43\n" and len(server.served()) == 2
    assert "netsql.run" in loaded and not engine(loaded), engine(loaded)


def test_spare_engines_declare_the_last_commands_tables_and_run_no_setup() -> None:
    """A spare engine has the tables the last command declared (their DDL would hold
    up the next command), but no setup ran in it: a setup (intel's functions, history)
    runs with the command's own settings."""
    from netsql.engine import Engine
    from netsql.serve.spares import Spares

    used = Engine()
    for result in used.run("SELECT count(*) FROM processes WHERE pid = 1"):
        assert result.data is not None and list(result.data.chunks()) == [[(1,)]]
    used.con.execute("CREATE TABLE ip_num_notes (x INTEGER)")  # names a setup's word
    spares = Spares()
    spares.learn(used)
    spares.refill()
    spare = spares.take()
    assert spare is not None and spares.take() is None
    tables = {r[0] for r in spare.con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal").fetchall()}
    assert tables == {"processes"}
    assert spare.con.execute("SELECT count(*) FROM duckdb_functions() "
                             "WHERE function_name = 'ip_num'").fetchone() == (0,)
    assert spare.render_rows == Spares.RENDER_ROWS
    # What the spare lacks is declared (and set up) by the statement itself.
    for result in spare.run("SELECT ip_num('10.0.0.1') = ip_num('10.0.0.2') - 1 AS n"):
        assert result.data is not None and list(result.data.chunks()) == [[(True,)]]
