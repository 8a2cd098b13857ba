"""The full-screen watch in a real terminal (tmux, 100x30, PROMPT_TOOLKIT_NO_CPR=1):
``netsql --watch`` and the shell's ``.watch``. A sequence gives a counter that grows by
one at every refresh, so refreshing, delta mode and pausing all show on screen."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need, wait_for_text
from tests.test_repl_terminal import COLS, PROMPT, ROWS, Term


class WatchTerm(Term):
    def run(self, *args: str) -> None:
        """``python -m netsql ARGS`` in a fresh tmux server."""
        env = {"HOME": str(self.home), "PAGER": "cat", "TERM": "screen", "LANG": "C.UTF-8",
               "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PROMPT_TOOLKIT_NO_CPR": "1"}
        cmd = shlex.join(["env", "-i", *(f"{k}={v}" for k, v in env.items()),
                          sys.executable, "-m", "netsql", *args])
        self.close()
        self.starts += 1
        self.socket = str(self.tmp / f"tmux{self.starts}.sock")
        self.tmux("new-session", "-d", "-s", "t", "-x", str(COLS), "-y", str(ROWS),
                  f"{cmd}; echo \"[exit $?]\"; sleep 60")

    def visible(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_visible(self, pattern: str | re.Pattern[str], timeout: float = 10) -> str:
        return wait_for_text(self.visible, pattern, timeout)


@pytest.fixture
def term(tmp_path: Path) -> Iterator[WatchTerm]:
    need(shutil.which("tmux") is not None, "needs tmux for the terminal tests")
    t = WatchTerm(tmp_path)
    try:
        yield t
    finally:
        t.close()


def counter(screen: str, port: int) -> int:
    """The sequence's value on the row of ``port`` (``│`` never appears: no boxes)."""
    m = re.search(rf"^\s+(\d+)\s+{port}\s+LISTEN\s*$", screen, re.M)
    assert m, screen
    return int(m.group(1))


def test_watch_refreshes_toggles_delta_sorts_pauses_and_quits(term: WatchTerm) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        term.run("--watch", "0.5", "-e", "CREATE SEQUENCE seq; SELECT nextval('seq') AS "
                 "packets, local_port, state FROM sockets WHERE local_port = "
                 f"{port} AND state = 'LISTEN'")
        screen = term.wait_visible("netsql watch │ delta: off")
        assert re.search(r"^\s+packets\s+local_port\s+state\s*$", screen, re.M)
        first = counter(screen, port)
        screen = term.wait_visible(re.compile(rf"^\s+{first + 2}\s+{port}\s", re.M))
        assert "q quit  p pause  d delta" in screen

        term.keys("d")
        screen = term.wait_visible("delta: on (per second)")
        screen = term.wait_visible(re.compile(r"^\s+packets/s\s+local_port", re.M))
        # One more per refresh, every 0.5 s: two per second.
        term.wait_visible(re.compile(rf"^\s+2(\.0)?\s+{port}\s+LISTEN", re.M))

        term.keys(">")
        term.wait_visible("sort: packets ▼")
        term.keys("d")
        term.wait_visible(re.compile(r"^\s+packets ▼\s+local_port", re.M))

        term.keys("p")
        screen = term.wait_visible("netsql watch │ PAUSED │")
        time.sleep(0.7)  # a refresh that was running when p was pressed may still land
        held = counter(term.visible(), port)
        time.sleep(1.5)
        assert counter(term.visible(), port) == held
        term.keys("p")
        term.wait_visible(re.compile(rf"^\s+{held + 2}\s+{port}\s", re.M))

        term.keys("q")
        assert term.wait_exit() == 0
    assert "Traceback" not in term.screen()


def test_shell_watch_returns_to_the_prompt(term: WatchTerm) -> None:
    term.start()
    term.line("CREATE SEQUENCE hits;")
    term.line(".watch 0.5 SELECT 'it''s here' AS quoted, nextval('hits') AS n_count")
    screen = term.wait_visible("netsql watch │ delta: off")
    assert re.search(r"^\s+it's here\s+\d+\s*$", screen, re.M)
    n = int(re.findall(r"it's here\s+(\d+)", screen)[0])
    term.wait_visible(re.compile(rf"it's here\s+{n + 1}\s*$", re.M))
    term.keys("q")
    term.wait_for(PROMPT)
    term.line("SELECT 6 * 7 AS answer;")
    term.wait_for(re.compile(r"│\s+42 │"))
    term.line(".watch 1")
    screen = term.wait_for("netsql: error: usage: .watch [SECONDS] STATEMENT")
    assert "Traceback" not in screen
