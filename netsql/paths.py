"""Where netsql's per-user files live (XDG base directories), and the rule under sudo.

Config: ``$XDG_CONFIG_HOME/netsql/config.toml`` (default ``~/.config/netsql/config.toml``).
History: ``$XDG_STATE_HOME/netsql/history`` (default ``~/.local/state/netsql/history``).
Under sudo (effective uid 0 and ``SUDO_USER`` set) both come from root's own home
directory (see netsql.repl.config). Standard library only: ``netsql -e`` finds the
config file through here without loading the shell's modules.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dirs:
    config: Path  # .../netsql (holds config.toml)
    state: Path  # .../netsql (holds history)
    sudo: bool  # paths are root's own because we run under sudo
    uid: int  # who should own what we create

    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"

    @property
    def history_file(self) -> Path:
        return self.state / "history"


def _xdg(environ: Mapping[str, str], var: str, default: Path) -> Path:
    value = environ.get(var, "")
    # The spec: relative paths are invalid and must be ignored.
    return Path(value) if value and os.path.isabs(value) else default


def user_dirs(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Dirs:
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    if euid == 0 and environ.get("SUDO_USER") and environ.get("SUDO_UID", "0") != "0":
        home = Path(pwd.getpwuid(0).pw_dir)
        return Dirs(home / ".config" / "netsql", home / ".local" / "state" / "netsql",
                    sudo=True, uid=0)
    home_env = environ.get("HOME", "")
    home = Path(home_env) if home_env else Path(pwd.getpwuid(euid).pw_dir)
    return Dirs(_xdg(environ, "XDG_CONFIG_HOME", home / ".config") / "netsql",
                _xdg(environ, "XDG_STATE_HOME", home / ".local" / "state") / "netsql",
                sudo=False, uid=euid)
