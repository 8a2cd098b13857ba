"""The shell end to end in a real terminal: tmux, 100x30, a private HOME (so history and
config are isolated), PROMPT_TOOLKIT_NO_CPR=1 (except where the bottom toolbar is
checked: prompt_toolkit draws it only once the terminal answered a cursor-position
request, which tmux does)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need, wait_for_text

ROWS, COLS = 30, 100
PROMPT = re.compile(r"^netsql@\S+( \[capture\])?>( |$)", re.M)


class Term:
    """One tmux server (own socket) running ``python -m netsql``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.home.mkdir(exist_ok=True)
        self.starts = 0
        self.socket = ""
        self.conf = tmp / "tmux.conf"
        self.conf.write_text("set -g history-limit 5000\n")

    def tmux(self, *args: str, check: bool = True) -> str:
        p = subprocess.run(["tmux", "-S", self.socket, "-f", str(self.conf), *args],
                           capture_output=True, text=True, timeout=10)
        if check and p.returncode != 0:
            raise AssertionError(f"tmux {args}: {p.stderr}")
        return p.stdout

    def start(self, cpr: bool = False, **env: str) -> float:
        """Start the shell; returns seconds until the prompt showed."""
        full = {"HOME": str(self.home), "PAGER": "cat", "TERM": "screen",
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        if not cpr:
            full["PROMPT_TOOLKIT_NO_CPR"] = "1"
        full.update(env)
        shell = shlex.join(["env", "-i", *(f"{k}={v}" for k, v in full.items()),
                            sys.executable, "-m", "netsql"])
        cmd = f"{shell}; echo \"[exit $?]\"; sleep 60"
        self.close()  # a fresh server and screen each time
        self.starts += 1
        self.socket = str(self.tmp / f"tmux{self.starts}.sock")
        t0 = time.monotonic()
        self.tmux("new-session", "-d", "-s", "t", "-x", str(COLS), "-y", str(ROWS), cmd)
        self.wait_for(PROMPT)
        return time.monotonic() - t0

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "t", "-S", "-500")

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 10) -> str:
        return wait_for_text(self.screen, pattern, timeout)

    def type(self, text: str) -> None:
        if text.endswith(";"):  # tmux reads a trailing ';' as its command separator
            text = text[:-1] + "\\;"
        self.tmux("send-keys", "-t", "t", "-l", text)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def line(self, text: str) -> None:
        self.type(text)
        self.keys("Enter")

    def wait_exit(self, timeout: float = 10) -> int:
        """The shell's exit status, once it ended."""
        text = self.wait_for(re.compile(r"^\[exit (\d+)\]", re.M), timeout)
        return int(re.findall(r"^\[exit (\d+)\]", text, re.M)[-1])

    def close(self) -> None:
        if self.socket:
            self.tmux("kill-server", check=False)


@pytest.fixture
def term(tmp_path: Path) -> Iterator[Term]:
    need(shutil.which("tmux") is not None, "needs tmux for the terminal tests")
    t = Term(tmp_path)
    try:
        yield t
    finally:
        t.close()


def after_last_prompt(screen: str, marker: str) -> list[str]:
    """Screen lines from the last prompt line containing ``marker`` to the next prompt."""
    lines = screen.splitlines()
    start = max(i for i, line in enumerate(lines) if PROMPT.match(line) and marker in line)
    out = []
    for line in lines[start + 1:]:
        if PROMPT.match(line):
            break
        out.append(line)
    return out


def test_multiline_join_shows_the_result(term: Term) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        term.start()
        term.line("SELECT p.pid, s.local_port")
        term.wait_for("...>")
        term.line("FROM sockets s JOIN processes p USING (pid)")
        term.line(f"WHERE s.local_port = {port};")
        screen = term.wait_for(re.compile(rf"│\s+{os.getpid()} │\s+{port} │"))
    assert screen.count("...> ") >= 2, screen


def test_tab_completes_a_table_and_a_column(term: Term) -> None:
    term.start()
    term.type("SELECT count(*) > 0 AS ok FROM sock")
    # Completions are computed while typing, off the key handler: on a loaded machine a
    # Tab sent at once can arrive before they are ready. Tab once the menu shows them.
    term.wait_for(re.compile(r"^ sockets +TCP and UDP", re.M))
    term.keys("Tab")
    term.wait_for("FROM sockets")
    term.type(" s WHERE s.local_p")
    term.wait_for(re.compile(r"local_port +INTEGER"))
    term.keys("Tab")
    term.wait_for("WHERE s.local_port")
    term.line(" >= 0;")
    screen = term.wait_for(re.compile(r"│ (true|false) +│"))
    assert "FROM sockets s WHERE s.local_port >= 0;" in screen


def test_schema_sockets_shows_descriptions(term: Term) -> None:
    term.start()
    term.line(".schema sockets")
    screen = term.wait_for("Remote IP address; NULL when not connected")
    assert re.search(r"remote_port +INTEGER +Remote port", screen)


def test_ctrl_c_cancels_a_running_query_and_the_next_one_works(term: Term) -> None:
    # range(10000000000) takes under a second here; a bigger one leaves time to cancel.
    term.start()
    term.line("SELECT count(*) FROM range(1000000000000);")
    time.sleep(1.0)
    t0 = time.monotonic()
    term.keys("C-c")
    term.wait_for("netsql: interrupted")
    assert time.monotonic() - t0 < 3
    term.line("SELECT 6 * 7 AS answer;")
    term.wait_for(re.compile(r"│\s+42 │"))


def test_history_survives_a_restart(term: Term) -> None:
    term.start()
    term.line("SELECT 'remember me' AS h;")
    term.wait_for("│ remember me │")
    term.keys("C-d")
    assert term.wait_exit() == 0
    history = term.home / ".local" / "state" / "netsql" / "history"
    assert "+SELECT 'remember me' AS h;" in history.read_text()
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    term.start()
    term.keys("Up")
    term.wait_for(re.compile(r"netsql@\S+( \[capture\])?> SELECT 'remember me' AS h;\s*$", re.M))
    term.keys("C-c", "C-r")
    term.type("rememb")
    term.wait_for("I-search backward: rememb")


def test_bad_statement_shows_one_line_and_the_shell_goes_on(term: Term) -> None:
    term.start()
    term.line("SELECT 1 AS one, nope;")
    # The error, then the next prompt (drawn a moment later on a loaded machine).
    screen = term.wait_for(re.compile(r"netsql: error:.*\n" + PROMPT.pattern[1:], re.M))
    lines = after_last_prompt(screen, "nope")
    assert lines[0].strip() == "SELECT 1 AS one, nope;" or lines[0].strip().startswith(
        "SELECT 1 AS one, nope")
    assert lines[1].index("^") == lines[0].index("nope")
    assert len(lines) == 3 and lines[2].startswith("netsql: error: ")
    term.line("SELECT 'still here' AS ok;")
    term.wait_for("│ still here │")


def test_ctrl_c_clears_the_line_and_ctrl_d_exits(term: Term) -> None:
    term.start()
    term.type("SELECT half typed")
    term.wait_for("SELECT half typed")
    term.keys("C-c")
    term.type("SELECT 'fresh' AS f;")
    term.keys("Enter")
    screen = term.wait_for("│ fresh │")
    assert re.search(r"> SELECT 'fresh' AS f;$", screen, re.M)
    term.keys("C-d")
    assert term.wait_exit() == 0


def test_tall_results_go_to_the_configured_pager(term: Term) -> None:
    """Also: the config file is read (pager, maxrows, vi keys)."""
    config = term.home / ".config" / "netsql"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(
        'pager = "sed s/^/PAGED:/"\nmaxrows = 50\nkeys = "vi"\n')
    term.start()
    term.line("SELECT 1 AS short;")
    term.wait_for("│ short │")
    term.line("SELECT * FROM range(100) t(i);")
    screen = term.wait_for(re.compile(r"^PAGED:│ 100 rows \(50 shown\) +│$", re.M))
    # the first 25 and the last 25 rows, as the DuckDB shell shows a long result
    assert re.search(r"^PAGED:│ +24 │$", screen, re.M) and re.search(r"^PAGED:│ +75 │$",
                                                                   screen, re.M)
    assert not re.search(r"^PAGED:│ +49 │$", screen, re.M) and "PAGED:│ short │" not in screen
    term.line(".pager off")
    term.line("SELECT j + 5000 AS j FROM range(40) t(j);")
    screen = term.wait_for(re.compile(r"^│ 5039 │$", re.M))
    assert "PAGED:│ 5039 │" not in screen


@pytest.mark.parametrize("pager", ["", "less"])
def test_result_stays_on_screen_after_quitting_less(term: Term, pager: str) -> None:
    """The default pager (PAGER unset) and plain PAGER=less keep the page on screen
    when quit, as pgcli does, instead of clearing it (less's alternate screen)."""
    need(shutil.which("less") is not None, "needs less")
    term.start(PAGER=pager)
    term.line("SELECT i + 7000 AS i FROM range(60) t(i);")
    term.wait_for(re.compile(r"^│ 7000 │$", re.M))  # less shows the first page
    term.wait_for(re.compile(r"^:", re.M))  # ... and waits for a key
    term.keys("q")
    # Back at a fresh prompt, with the page still above it.
    screen = term.wait_for(re.compile(r"^│ 7020 │$(?:.|\n)*^netsql@\S+( \[capture\])?>\s*\Z",
                                      re.M))
    assert re.search(r"^│ 7000 │$", screen, re.M), screen


def test_shell_words_in_notices_and_capture_start_time(term: Term) -> None:
    """The cut-columns notice names the shell's .mode line (not --format line), and
    .capture shows when capture started as a UTC ISO 8601 time, not an epoch."""
    term.start()
    term.line("SELECT repeat('x', 150) AS wide;")
    screen = term.wait_for("to see whole values")
    assert "use .mode line or a wider terminal" in screen and "--format" not in screen
    need(os.geteuid() == 0, "needs root to capture")
    term.line("SELECT 1 AS one;")  # a new prompt, drawn once capture runs
    term.wait_for(re.compile(r"^netsql@\S+ \[capture\]>", re.M))
    term.line(".capture")
    screen = term.wait_for(re.compile(r"^started +\S+$", re.M))
    started = re.findall(r"^started +(\S+)$", screen, re.M)[-1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", started), screen


def test_toolbar_prompt_and_no_color(term: Term) -> None:
    term.start(cpr=True)
    term.wait_for(re.compile(r"capture: (on \(all\) \d+ msgs, \d+ dropped|off) │ mode: table │ "
                             r"timer: off"))
    term.line(".mode csv")
    term.line(".timer on")
    term.wait_for("mode: csv │ timer: on")
    term.type("SELECT 'x'")
    term.wait_for("SELECT 'x'")
    colored = term.tmux("capture-pane", "-p", "-e", "-t", "t")
    assert re.search(r"\x1b\[[0-9;]*(3[0-7]|38;5;\d+|9[0-7])m", colored)
    term.start(NO_COLOR="1")
    term.type("SELECT 'x' FROM sockets")
    term.wait_for("FROM sockets")
    plain = term.tmux("capture-pane", "-p", "-e", "-t", "t")
    assert not re.search(r"\x1b\[[0-9;]*(3[0-7]|38;5;\d+|9[0-7])m", plain)

