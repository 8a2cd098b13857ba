"""Shared fixtures. Privileged tests (root, network namespaces, dnsmasq) skip on a
laptop, but fail when NETSQL_REQUIRE_PRIVILEGED=1 (as .ci/run sets)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

REQUIRE = os.environ.get("NETSQL_REQUIRE_PRIVILEGED") == "1"


def need(condition: bool, why: str) -> None:
    """Skip (or, under NETSQL_REQUIRE_PRIVILEGED=1, fail) unless ``condition``."""
    if condition:
        return
    if REQUIRE:
        pytest.fail(f"required by NETSQL_REQUIRE_PRIVILEGED=1 but missing: {why}")
    pytest.skip(why)


def have_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, empty network namespace (loopback up); removed afterwards."""
    need(have_netns(), "needs root and iproute2 for network namespaces")
    name = "nsqlt-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def netsql_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "netsql", *args]


def run_netsql(*args: str, input: str | None = None, netns: str | None = None,
               env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a subprocess (optionally inside a network namespace)."""
    cmd = netsql_cmd(*args)
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    full_env = dict(os.environ)
    full_env.pop("NO_COLOR", None)
    full_env["NETSQL_SOCKET"] = ""  # never a resident netsql someone left running
    full_env.update(env or {})
    return subprocess.run(cmd, input=input if input is not None else "", capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def wait_for_text(read: Callable[[], str], pattern: str | re.Pattern[str],
                  timeout: float = 10) -> str:
    """Poll ``read()`` (a terminal's screen, say) until ``pattern`` shows; its text."""
    rx = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if rx.search(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{rx.pattern!r} not on screen:\n{text}")
        time.sleep(0.05)


def modules_loaded_by(code: str) -> tuple[int, str, str]:
    """Run ``code`` (which ends in ``rc = ...``) in a fresh interpreter: its status, the
    REPL-only modules it loaded (prompt_toolkit, pygments, netsql.repl, the full-screen
    watch) as the text of a list ("[]": none), and its standard output."""
    check = ("; bad = [m for m in sys.modules if m.split('.')[0] in "
             "('prompt_toolkit', 'pygments') or m.startswith(('netsql.repl', "
             "'netsql.watch.screen'))]; print(bad, file=sys.stderr); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", "import sys; " + code + check],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr.strip(), p.stdout
