"""The shell's config file, XDG paths, sudo, and the history file."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from prompt_toolkit.history import FileHistory

from netsql.paths import Dirs, user_dirs
from netsql.repl.config import DEFAULT_PAGER, Config, load_config, prepare_history, trim_history
from tests.conftest import modules_loaded_by


def test_config_values_and_warnings(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert load_config(path) == Config()  # no file: defaults, no warnings
    path.write_text('format = "CSV"\nkeys = "vi"\npager = false\nmaxrows = 50\n'
                    'history_size = -1\ncolour = "red"\ntimer = "yes"\n')
    config = load_config(path)
    assert (config.format, config.keys, config.pager, config.maxrows) == ("csv", "vi", False,
                                                                          50)
    assert config.history_size == 10000 and config.timer is False
    assert len(config.warnings) == 3
    assert any("unknown setting 'colour'" in w for w in config.warnings)
    path.write_text("format = \n")
    config = load_config(path)
    assert config == Config(warnings=config.warnings) and len(config.warnings) == 1


def test_pager_choice() -> None:
    assert Config().pager_command({}) == DEFAULT_PAGER
    assert Config().pager_command({"PAGER": "most"}) == "most"
    assert Config(pager="cat -n").pager_command({"PAGER": "most"}) == "cat -n"
    assert Config(pager=False).pager_command({"PAGER": "most"}) is None


def test_xdg_dirs() -> None:
    dirs = user_dirs({"HOME": "/home/u", "XDG_STATE_HOME": "/s", "XDG_CONFIG_HOME": "/c"},
                     euid=1000)
    assert dirs.history_file == Path("/s/netsql/history")
    assert dirs.config_file == Path("/c/netsql/config.toml")
    dirs = user_dirs({"HOME": "/home/u", "XDG_STATE_HOME": "relative"}, euid=1000)
    assert dirs.history_file == Path("/home/u/.local/state/netsql/history")
    assert dirs.config_file == Path("/home/u/.config/netsql/config.toml")


def test_sudo_uses_roots_own_dirs_not_the_users() -> None:
    root_home = Path(pwd.getpwuid(0).pw_dir)
    environ = {"HOME": "/home/alice", "SUDO_USER": "alice", "SUDO_UID": "1000",
               "XDG_STATE_HOME": "/home/alice/.local/state"}
    dirs = user_dirs(environ, euid=0)
    assert dirs.sudo and dirs.uid == 0
    assert dirs.history_file == root_home / ".local" / "state" / "netsql" / "history"
    assert not str(dirs.config_file).startswith("/home/alice")
    assert dirs.intel_db == root_home / ".local" / "share" / "netsql" / "intel.duckdb"
    assert dirs.spill == root_home / ".cache" / "netsql" / "spill"
    # root's own shell (no sudo) and a non-root sudo target keep the usual rules
    assert not user_dirs({"HOME": "/root"}, euid=0).sudo
    assert not user_dirs({**environ}, euid=1000).sudo


def test_history_file_is_private_and_trimmed(tmp_path: Path) -> None:
    dirs = Dirs(tmp_path / "c", tmp_path / "state" / "netsql", tmp_path / "d", tmp_path / "k",
                sudo=False, uid=os.geteuid())
    path, why = prepare_history(dirs, 3)
    assert path == dirs.history_file and why is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    history = FileHistory(str(path))
    for i in range(5):
        history.store_string(f"SELECT {i};\n-- line two")
    assert trim_history(path, 3) == 2
    assert list(FileHistory(str(path)).load_history_strings()) == [
        f"SELECT {i};\n-- line two" for i in (4, 3, 2)]
    assert prepare_history(dirs, 0) == (None, None)


def test_no_history_file_under_another_users_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    alice = tmp_path / "alice"
    alice.mkdir()
    os.chown(alice, 4321, 4321)
    dirs = Dirs(alice / ".config", alice / ".local" / "state" / "netsql",
                alice / ".local" / "share" / "netsql", alice / ".cache" / "netsql",
                sudo=False, uid=0)
    path, why = prepare_history(dirs, 100)
    assert path is None and why is not None and str(alice) in why
    assert list(alice.iterdir()) == []


def test_netsql_e_does_not_import_the_shell_libraries() -> None:
    # (Its own output stream: run as the netsql process, main() would exit at once.)
    status, loaded, _ = modules_loaded_by(
        "import io; from netsql.cli import main; from netsql.context import Env; "
        "rc = main(['-e', 'SELECT 1'], Env(stdout=io.StringIO()))")
    assert status == 0 and loaded == "[]", loaded
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "netsql", "-e", "SELECT 1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines()}
    assert "duckdb" in imported  # the import log is there...
    assert not {m for m in imported if m.split(".")[0] in ("prompt_toolkit", "pygments")}
