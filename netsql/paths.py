"""Where netsql's own files live, and who may own them: the one copy of the XDG and
sudo rules.

Config: ``$XDG_CONFIG_HOME/netsql`` (``~/.config/netsql``): config.toml, queries/.
State: ``$XDG_STATE_HOME/netsql`` (``~/.local/state/netsql``): the shell's history.
Data: ``$XDG_DATA_HOME/netsql`` (``~/.local/share/netsql``): the intel database.
Cache: ``$XDG_CACHE_HOME/netsql`` (``~/.cache/netsql``): DuckDB's spill files.
Socket: ``$NETSQL_SOCKET``, else ``/run/netsql`` for root, else
``$XDG_RUNTIME_DIR/netsql`` (``/tmp/netsql-UID``).

Under sudo (effective uid 0 and ``SUDO_USER`` set) every directory is root's own,
taken from the password database: ``HOME`` and ``XDG_*`` may still name the invoking
user's directories (``sudo -E``, some sudoers), and a root-owned file there would break
the user's next unprivileged run. As a second guard, netsql never creates a file under
a directory that belongs to another user (``su`` without ``-``): see
:func:`foreign_owner`; the caller then does without the file and says so.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from netsql.sockpath import socket_path  # noqa: F401  (re-exported: the socket's path)


@dataclass(frozen=True)
class Dirs:
    config: Path  # .../netsql (holds config.toml, queries/)
    state: Path  # .../netsql (holds history)
    data: Path  # .../netsql (holds intel.duckdb)
    cache: Path  # .../netsql (holds spill/)
    sudo: bool  # paths are root's own because we run under sudo
    uid: int  # who should own what we create

    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"

    @property
    def history_file(self) -> Path:
        return self.state / "history"

    @property
    def intel_db(self) -> Path:
        return self.data / "intel.duckdb"

    @property
    def spill(self) -> Path:
        return self.cache / "spill"


def _xdg(environ: Mapping[str, str], var: str, default: Path) -> Path:
    value = environ.get(var, "")
    # The spec: relative paths are invalid and must be ignored.
    return Path(value) if value and os.path.isabs(value) else default


def under_sudo(environ: Mapping[str, str], euid: int) -> bool:
    return euid == 0 and bool(environ.get("SUDO_USER")) and environ.get("SUDO_UID",
                                                                          "0") != "0"


def _home(uid: int, environ: Mapping[str, str]) -> Path:
    try:
        return Path(pwd.getpwuid(uid).pw_dir)
    except KeyError:  # a uid without a passwd entry (a container)
        return Path(environ.get("HOME") or "/")


def user_dirs(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Dirs:
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    if under_sudo(environ, euid):
        home = _home(0, environ)
        return Dirs(home / ".config" / "netsql", home / ".local" / "state" / "netsql",
                    home / ".local" / "share" / "netsql", home / ".cache" / "netsql",
                    sudo=True, uid=0)
    home_env = environ.get("HOME", "")
    home = Path(home_env) if home_env else _home(euid, environ)
    return Dirs(_xdg(environ, "XDG_CONFIG_HOME", home / ".config") / "netsql",
                _xdg(environ, "XDG_STATE_HOME", home / ".local" / "state") / "netsql",
                _xdg(environ, "XDG_DATA_HOME", home / ".local" / "share") / "netsql",
                _xdg(environ, "XDG_CACHE_HOME", home / ".cache") / "netsql",
                sudo=False, uid=euid)


def foreign_owner(path: Path, uid: int) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) when it belongs
    to a user other than ``uid``; None when creating ``path`` is ours to do."""
    p = path
    while True:
        try:
            st = p.stat()
        except FileNotFoundError:
            if p.parent == p:
                return None
            p = p.parent
            continue
        except OSError:
            return p
        return p if st.st_uid != uid else None


def intel_db(override: str | None = None, environ: Mapping[str, str] | None = None,
             euid: int | None = None) -> str:
    """--intel-db, else $NETSQL_INTEL_DB, else $XDG_DATA_HOME/netsql/intel.duckdb
    (~/.local/share/netsql/intel.duckdb; root's own under sudo)."""
    environ = os.environ if environ is None else environ
    if override:
        return override
    if environ.get("NETSQL_INTEL_DB"):
        return environ["NETSQL_INTEL_DB"]
    return str(user_dirs(environ, euid).intel_db)


def spill_dir() -> str:
    """Where DuckDB may spill (the effective user's own cache directory): never into
    the directory a responder happens to stand in."""
    return str(user_dirs().spill)
