"""Rewrite docs/tutorial.md from real runs (needs root, iproute2, dnsmasq, unshare).

    sudo .venv/bin/python docs/make_tutorial.py

The steps, the lab and the page's text are in tests/test_tutorial.py; this runs that
test with NETSQL_WRITE_TUTORIAL=1, which writes the page instead of comparing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = dict(os.environ, NETSQL_WRITE_TUTORIAL="1", NETSQL_REQUIRE_PRIVILEGED="1")
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_tutorial.py::test_tutorial"], cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
