"""README.md's install-and-run command, run as written: in a copy of the source tree,
with a fresh HOME, on this root shell (which has no sudo here, as in containers)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent


def sh_blocks(text: str, heading: str) -> list[str]:
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def test_readme_run_command_works_as_root_with_or_without_sudo(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "needs root (the README command's privileged case)")
    (command,) = sh_blocks((ROOT / "README.md").read_text(), "Install and run")
    assert "pip install ." in command and "netsql -e" in command
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "*.so", ".*_cache"))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(HOME=str(home), NETSQL_SOCKET="", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR") or os.path.expanduser(
                   "~/.cache/pip"))  # the wheels of earlier runs, not a fresh download
    if shutil.which("sudo") is not None:  # test the sudo-less root shell all the same
        bare = tmp_path / "bin"
        bare.mkdir()
        for tool in ("python3", "sh", "cc", "gcc", "x86_64-linux-gnu-gcc"):
            found = shutil.which(tool)
            if found:
                (bare / tool).symlink_to(found)
        env["PATH"] = str(bare)
    p = subprocess.run(["sh", "-c", command], cwd=src, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"│ +pid │ +name +│ +local_address +│", p.stdout), p.stdout[-2000:]
    assert (home / ".netsql" / "bin" / "netsql").exists()


def test_readme_keeps_its_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(sh_blocks(text, "Install and run")) == 1
    (tests,) = sh_blocks(text, "Run the tests")
    assert "pip install -q -e '.[test]'" in tests and "pytest" in tests
