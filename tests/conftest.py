"""Shared fixtures. Privileged tests (root, network namespaces, dnsmasq) skip on a
laptop, but fail when NETSQL_REQUIRE_PRIVILEGED=1 (as .ci/run sets)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

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
