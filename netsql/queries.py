"""Saved queries: ``.sql`` files whose header comment names them, says what they do and
declares their typed parameters (the format: queryfile.py; docs/queries.md).

Found, in this order (a later file overrides an earlier one of the same name): the
queries shipped with netsql, the user's ``$XDG_CONFIG_HOME/netsql/queries`` (root's own
under sudo, as for config.toml), then each ``--queries DIR``. Parameter values are
converted to their declared type here and bound by DuckDB as prepared-statement
parameters (``$name``), never pasted into the SQL text.

Only the standard library at import time: ``netsql --list-queries`` needs no DuckDB.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from netsql.queryfile import (
    FIELDS,
    NAME_RE,
    PARAM_RE,
    SHIPPED,
    TYPES,
    USER,
    Param,
    ParamType,
    QueryFileError,
    QueryUsageError,
    SavedQuery,
    parse_query,
    read_query,
)

__all__ = ["FIELDS", "NAME_RE", "PARAM_RE", "SHIPPED", "TYPES", "USER", "Param", "ParamType",
           "QueryFileError", "QueryUsageError", "SavedQuery", "parse_query", "read_query"]


# -- where they live ---------------------------------------------------------------


def shipped_dir() -> Path | None:
    """The queries installed with netsql (netsql/_queries), or a source tree's queries/."""
    here = Path(__file__).resolve().parent
    if (here / "_queries").is_dir():
        return here / "_queries"
    if (here.parent / "pyproject.toml").is_file() and (here.parent / "queries").is_dir():
        return here.parent / "queries"
    return None


def user_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/netsql/queries``; under sudo root's own, as for config.toml."""
    from netsql.paths import user_dirs

    return user_dirs(environ).config / "queries"


def search_path(extra_dirs: Sequence[str] = (), environ: Mapping[str, str] | None = None,
                ) -> list[tuple[Path, str]]:
    """(directory, origin) in load order; later ones override earlier ones by name."""
    dirs = [(d, SHIPPED) for d in [shipped_dir()] if d is not None]
    dirs.append((user_dir(environ), USER))
    return dirs + [(Path(d), str(d)) for d in extra_dirs]


def load_queries(extra_dirs: Sequence[str] = (), *,
                 warn: Callable[[str], None] | None = None,
                 environ: Mapping[str, str] | None = None) -> list[SavedQuery]:
    """Every saved query on the search path, sorted by name. A file that cannot be read
    or whose header is broken is skipped with one ``warn`` line; a ``--queries`` DIR that
    is not a directory is a QueryUsageError."""
    for d in extra_dirs:
        if not os.path.isdir(d):
            raise QueryUsageError(f"--queries: not a directory: {d}")
    found: dict[str, SavedQuery] = {}
    for directory, origin in search_path(extra_dirs, environ):
        try:
            files = sorted(p for p in directory.iterdir() if p.suffix == ".sql")
        except OSError:
            continue  # no user directory: nothing to load
        for path in files:
            try:
                q = read_query(path, origin)
            except QueryUsageError as exc:
                if warn:
                    warn(f"skipping query file: {exc}")
                continue
            old = found.get(q.name)
            found[q.name] = replace(q, overrides=old.path) if old else q
    return sorted(found.values(), key=lambda q: q.name)


def find_query(name: str, queries: Sequence[SavedQuery]) -> SavedQuery:
    """The query called ``name``, or a QueryUsageError naming the closest ones."""
    for q in queries:
        if q.name == name:
            return q
    names = [q.name for q in queries]
    near = [n for n in names if n.startswith(name) or name in n]
    near = list(dict.fromkeys(near + difflib.get_close_matches(name, names, n=3, cutoff=0.6)))
    hint = f" (did you mean {', '.join(near[:3])}?)" if near else ""
    raise QueryUsageError(f"no saved query named {name!r}{hint}; netsql --list-queries "
                          "lists them")


def resolve(name: str, queries: Sequence[SavedQuery]) -> SavedQuery:
    """``-q``/``.run`` argument: a query name, or the path of a query file."""
    if os.sep in name or name.endswith(".sql"):
        return read_query(name, strict=False)
    return find_query(name, queries)


def parse_assignments(pairs: Iterable[str]) -> dict[str, str]:
    """``key=value`` texts (``-p``, ``.run``) as a dict; a bad or repeated key is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip().lower()
        if not eq or not PARAM_RE.match(key):
            raise QueryUsageError(f"a parameter is KEY=VALUE, not {pair!r}")
        if key in out:
            raise QueryUsageError(f"parameter {key} given twice")
        out[key] = value
    return out


def check_known(args: Mapping[str, str], queries: Sequence[SavedQuery]) -> None:
    """Every key of ``args`` is a parameter of one of ``queries``."""
    for key in args:
        if not any(q.param(key) for q in queries):
            if len(queries) == 1:
                raise QueryUsageError(queries[0]._unknown(key))
            raise QueryUsageError(f"unknown parameter {key!r}: no query or file given "
                                  "declares it")


# -- listings ----------------------------------------------------------------------


def listing_rows(queries: Sequence[SavedQuery]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``--list-queries`` as a table: name, parameters, description, origin."""
    rows: list[tuple[Any, ...]] = []
    for q in queries:
        params = ", ".join(p.name if p.required else f"[{p.name}]" for p in q.params)
        rows.append((q.name, params, q.description, q.origin))
    return ["name", "parameters", "description", "origin"], rows


def listing_json(queries: Sequence[SavedQuery]) -> list[dict[str, Any]]:
    """``--list-queries --format json``: everything a tool needs to run them."""
    return [{
        "name": q.name, "description": q.description,
        "parameters": [{"name": p.name, "type": p.type, "required": p.required,
                        "default": None if p.required else p.default,
                        "description": p.description} for p in q.params],
        "examples": list(q.examples), "notes": q.notes, "origin": q.origin, "path": q.path,
        "overrides": q.overrides,
    } for q in queries]


# -- what the CLI runs -------------------------------------------------------------

Run = tuple[str, str, dict[str, Any] | None]  # (origin, SQL, parameter values)


def _file_query(path: str, text: str) -> SavedQuery | None:
    """A ``-f`` file that declares parameters, else None (plain SQL, run as it is)."""
    try:
        q = parse_query(text, path, strict=False)
    except QueryFileError:
        return None
    return q if q.params else None


def prepare_runs(sources: Sequence[tuple[str, str, str]], pairs: Sequence[str],
                 extra_dirs: Sequence[str] = (), *,
                 warn: Callable[[str], None] | None = None) -> list[Run]:
    """``-e``/``-f``/``-q`` sources, in order, as (kind, origin, text; for ``-q`` the
    name or path) -> what to run. ``-p`` values bind to the ``-q`` query and to ``-f``
    files whose header declares parameters; a key none of them declares is an error."""
    args = parse_assignments(pairs)
    names = [text for kind, _, text in sources if kind == "query"]
    if len(names) > 1:
        raise QueryUsageError("-q: one saved query per run (-f runs any number of files)")
    library = load_queries(extra_dirs, warn=warn) if names and not (
        os.sep in names[0] or names[0].endswith(".sql")) else []
    plan: list[tuple[str, str, SavedQuery | None]] = []
    for kind, origin, text in sources:
        if kind == "query":
            q: SavedQuery | None = resolve(text, library)
            assert q is not None
            q.check()
            plan.append((q.name, q.body, q))
        else:
            fq = _file_query(origin, text) if kind == "file" else None
            plan.append((origin, fq.body if fq else text, fq))
    used = [q for _, _, q in plan if q is not None]
    if args and not used:
        raise QueryUsageError("-p needs -q NAME, or -f FILE whose header declares "
                              "parameters")
    check_known(args, used)
    return [(origin, text, q.bind(args, strict=False) if q else None)
            for origin, text, q in plan]


def query_help(name: str, extra_dirs: Sequence[str] = (), *,
               warn: Callable[[str], None] | None = None) -> str:
    """``netsql -q NAME --help``."""
    library = [] if os.sep in name or name.endswith(".sql") else load_queries(
        extra_dirs, warn=warn)
    return resolve(name, library).help_text()
