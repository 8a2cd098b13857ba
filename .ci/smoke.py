"""Smoke test of an installed netsql (a wheel in its own venv, as `pip install .` gives
users). Run by .ci/run with that venv's python, from a directory outside the source
tree, so nothing is imported from the checkout:

    VENV/bin/python .ci/smoke.py SOURCE_TREE

Each check prints one line; the first failure exits 1 with what it saw.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE = Path(sys.argv[1]).resolve()
NETSQL = [sys.executable, "-m", "netsql"]  # NETSQL_SOCKET="" keeps it local
ENV = dict(os.environ, NETSQL_SOCKET="", NO_COLOR="1")


def fail(what: str, detail: str = "") -> None:
    print(f"smoke: FAIL {what}\n{detail}", flush=True)
    sys.exit(1)


def ok(what: str) -> None:
    print(f"smoke: ok   {what}", flush=True)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETSQL, *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def every_module_imports() -> None:
    import netsql

    here = Path(netsql.__file__).parent
    if here == SOURCE / "netsql" or "site-packages" not in here.parts:
        fail("the source tree, not the installed copy, is imported", str(here))
    installed = {m.name for m in pkgutil.walk_packages(netsql.__path__, "netsql.")
                 if m.name != "netsql.__main__"}  # that one runs the command line
    for name in sorted(installed):
        importlib.import_module(name)
    tree = {
        "netsql." + ".".join(p.relative_to(SOURCE / "netsql").with_suffix("").parts)
        for p in (SOURCE / "netsql").rglob("*.py")
    }
    tree = {t.removesuffix(".__init__") for t in tree if not t.endswith("__main__")}
    missing = sorted(tree - installed - {"netsql"})
    if missing:
        fail("modules missing from the install", ", ".join(missing))
    if sys.platform.startswith("linux"):
        for compiled in ("netsql.capture._cscan", "netsql._cdiag"):
            importlib.import_module(compiled)  # CI has a compiler: the wheel has them
    ok(f"{len(installed)} installed modules import; none of the tree's is missing")


def watch_changes() -> None:
    """--watch 1 --changes --format jsonl: a process started during the watch shows as
    an added row, one that ends as a removed row."""
    tag = f"smoke-{os.getpid()}"
    # The pattern is split so that the watch's own command line does not match it.
    sql = f"SELECT pid, name FROM processes WHERE cmdline LIKE '%netsql-' || '{tag}%'"
    watch = subprocess.Popen([*NETSQL, "--watch", "1", "--changes", "--format", "jsonl",
                              "-e", sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              f"netsql-{tag}"])
    actions: list[str] = []
    try:
        assert watch.stdout is not None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and "removed" not in actions:
            ready, _, _ = select.select([watch.stdout], [], [], 1)
            if not ready:
                continue
            line = watch.stdout.readline()
            if not line:
                break
            row = json.loads(line)
            if row.get("pid") != child.pid:
                fail("--watch --changes printed another process", line)
            actions.append(row.get("action", ""))
            if row.get("action") == "added" and child.poll() is None:
                child.kill()
                child.wait()
    finally:
        watch.send_signal(signal.SIGTERM)
        out, err = watch.communicate(timeout=20)
        if child.poll() is None:
            child.kill()
    if "added" not in actions or "removed" not in actions:
        fail("--watch --changes printed no added and removed rows",
             f"actions={actions} stderr={err}")
    ok(f"--watch 1 --changes --format jsonl: {actions}, exit {watch.returncode}")


def commands() -> None:
    checks = [
        (["-q", "listening"], "address"),
        (["--list-queries"], "trace-domain"),
        (["intel", "--help"], "import"),
        (["serve", "--help"], "usage"),
        (["-e", "SELECT count(*) AS n FROM processes"], "n"),
    ]
    for args, expect in checks:
        p = run(*args)
        if p.returncode != 0 or expect not in p.stdout.lower():
            fail(f"netsql {' '.join(args)}", f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        ok(f"netsql {' '.join(args)}")


def shell_answers_tables() -> None:
    """The interactive shell in a pseudo-terminal answers .tables."""
    home = tempfile.mkdtemp(prefix="netsql-smoke-home-")
    env = dict(ENV, HOME=home, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", PAGER="cat")
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, NETSQL, env)
    seen = b""

    def wait_for(text: bytes, timeout: float = 30) -> bool:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    return False
        return text in seen

    try:
        if not wait_for(b"netsql@"):
            fail("the shell showed no prompt", seen.decode(errors="replace"))
        os.write(fd, b".tables\r")
        if not wait_for(b"dns_queries") or not wait_for(b"listening_ports"):
            fail("the shell did not answer .tables", seen.decode(errors="replace"))
        os.write(fd, b".quit\r")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            wait_for(b"\0", 0.5)
        else:
            fail("the shell did not quit on .quit", seen.decode(errors="replace"))
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ok("the shell starts in a pty and answers .tables")


def osquery_pack() -> None:
    """The shipped pack is package data: found by name in the installed copy."""
    p = run("--pack", "incident-response", "--format", "jsonl", timeout=120)
    if p.returncode != 0:
        fail("netsql --pack incident-response", p.stderr)
    names = {json.loads(line)["name"] for line in p.stdout.splitlines()}
    if "pack_incident-response_shell_users" not in names:
        fail("the shipped pack's results log", p.stdout[:2000])
    ok("netsql --pack incident-response writes osqueryd's results log")


def main() -> None:
    os.chdir(tempfile.mkdtemp(prefix="netsql-smoke-"))
    every_module_imports()
    commands()
    osquery_pack()
    watch_changes()
    shell_answers_tables()
    print("smoke: every check of the installed wheel held", flush=True)


if __name__ == "__main__":
    main()
