"""The shell's config file and its history file.

Config: ``$XDG_CONFIG_HOME/netsql/config.toml`` (default ``~/.config/netsql/config.toml``).
History: ``$XDG_STATE_HOME/netsql/history`` (default ``~/.local/state/netsql/history``).
Where they live, under sudo too, is netsql/paths.py's rule. The history file is never
created under a directory that belongs to another user (``su`` without ``-``): the
shell then keeps history in memory only and says so once.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netsql.paths import Dirs, foreign_owner

DEFAULT_PAGER = "less -SRFX"


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    help: str
    check: Callable[[Any], bool]
    expect: str  # what a valid value looks like, for the warning


def _format_ok(value: Any) -> bool:
    from netsql.formats import format_names

    return isinstance(value, str) and value.lower() in format_names()


def _int_ok(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: Every config key, in documentation order (docs/shell.md is generated from this list).
OPTIONS: list[Option] = [
    Option("format", "table", "Output format, as `.mode` and `--format`.", _format_ok,
           "an output format name"),
    Option("pager", True, "`true`: `$PAGER`, else `less -SRFX`; `false`: never page; "
           "a string: that command (run by `sh -c`).",
           lambda v: isinstance(v, bool | str), "true, false or a command"),
    Option("keys", "emacs", "Key bindings: `emacs` or `vi`.",
           lambda v: v in ("emacs", "vi"), '"emacs" or "vi"'),
    Option("history_size", 10000, "Statements kept in the history file (0: keep none).",
           _int_ok, "a whole number >= 0"),
    Option("theme", "default", "Colour theme: a Pygments style name (`default`, `monokai`, "
           "`native`, `solarized-dark`, ...) or `none` for no highlighting.",
           lambda v: isinstance(v, str) and bool(v), "a Pygments style name or \"none\""),
    Option("timer", False, "Print run times after each statement, as `.timer on`.",
           lambda v: isinstance(v, bool), "true or false"),
    Option("maxrows", 1000, "Rows shown on the terminal per result (0: all), as `.maxrows`.",
           _int_ok, "a whole number >= 0"),
    Option("complete_while_typing", True, "Show completions while typing (else on Tab).",
           lambda v: isinstance(v, bool), "true or false"),
    Option("safe", False, "`true`: every netsql run by this user (`-e` too) is in `--safe` "
           "mode: SQL reads netsql's tables only, no files or network (docs/security.md).",
           lambda v: isinstance(v, bool), "true or false"),
    Option("osquery", False, "Start in osquery mode, as `--osquery` and `.osquery on` "
           "(docs/osquery.md).", lambda v: isinstance(v, bool), "true or false"),
    Option("history_dir", "", "A recorded history tree the `history.<table>` views read, "
           "as `--history DIR` (docs/history.md); empty: none.",
           lambda v: isinstance(v, str), "a directory path"),
]


@dataclass
class Config:
    format: str = "table"
    pager: bool | str = True
    keys: str = "emacs"
    history_size: int = 10000
    theme: str = "default"
    timer: bool = False
    maxrows: int = 1000
    complete_while_typing: bool = True
    safe: bool = False
    osquery: bool = False
    history_dir: str = ""
    #: The file this was read from (None: defaults only).
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def pager_command(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The pager to run, or None when paging is off."""
        environ = os.environ if environ is None else environ
        if self.pager is False:
            return None
        if isinstance(self.pager, str) and self.pager.strip():
            return self.pager.strip()
        return environ.get("PAGER", "").strip() or DEFAULT_PAGER


def load_config(path: Path) -> Config:
    """The config at ``path`` (defaults when it does not exist). Problems become
    one-line warnings in ``Config.warnings`` and the default is used instead."""
    config = Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return config
    except (OSError, tomllib.TOMLDecodeError) as exc:
        config.warnings.append(f"{path}: ignored: {exc}")
        return config
    config.path = path
    known = {o.name: o for o in OPTIONS}
    for key, value in data.items():
        opt = known.get(key)
        if opt is None:
            config.warnings.append(f"{path}: unknown setting {key!r} ignored "
                                   f"(known: {', '.join(known)})")
        elif not opt.check(value):
            config.warnings.append(f"{path}: {key} should be {opt.expect}, not {value!r}; "
                                   f"using {opt.default!r}")
        else:
            setattr(config, key, value.lower() if key == "format" else value)
    return config


def prepare_history(dirs: Dirs, keep: int) -> tuple[Path | None, str | None]:
    """Make sure the history file can be used: (path, None), or (None, why not).

    The directory is created private (0700), the file 0600 (statements can hold
    secrets), and the file is cut to its ``keep`` newest entries.
    """
    path = dirs.history_file
    if keep <= 0:
        return None, None
    other = foreign_owner(path, dirs.uid)
    if other is not None:
        return None, (f"history is not saved: {other} belongs to another user "
                      "(run with sudo -H, or set XDG_STATE_HOME)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        trim_history(path, keep)
    except OSError as exc:
        return None, f"history is not saved: {path}: {exc.strerror or exc}"
    return path, None


def _history_entries(text: str) -> list[list[str]]:
    """prompt_toolkit's FileHistory format: each entry is a '# timestamp' line and
    its lines prefixed with '+', entries separated by blank lines."""
    entries: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#") and any(x.startswith("+") for x in current):
            entries.append(current)
            current = []
        current.append(line)
    if any(x.startswith("+") for x in current):
        entries.append(current)
    return entries


def trim_history(path: Path, keep: int) -> int:
    """Keep the ``keep`` newest entries of a history file; returns how many were dropped."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return 0
    entries = _history_entries(text)
    drop = len(entries) - keep
    if drop <= 0:
        return 0
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
        for entry in entries[drop:]:
            f.write("".join(entry))
    os.replace(tmp, path)
    return drop
