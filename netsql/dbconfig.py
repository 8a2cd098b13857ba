"""How netsql configures DuckDB: one place for the settings every connection gets, and
the ``--safe`` lock and its config key (docs/security.md). Low: it imports only
netsql.paths (to find the config file).

Defaults: DuckDB never installs or loads an extension from the network by itself, and
an explicit ``INSTALL`` fails without touching the network or the disk: extensions,
persistent secrets and the extension repository point under ``/dev/null``, where no
directory can be made, so nothing like ``~/.duckdb`` appears in anyone's home.
Extensions built into DuckDB (json, parquet) keep working.
"""

from __future__ import annotations

from typing import Any

#: Under /dev/null no directory can be created: INSTALL fails before any download.
NOWHERE = "/dev/null/netsql"

Value = str | bool | int | float | list[str]


def settings(**extra: Value) -> dict[str, Value]:
    """The config of every DuckDB connection netsql opens (plus ``extra``)."""
    config: dict[str, Value] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "extension_directory": f"{NOWHERE}-extensions",
        "secret_directory": f"{NOWHERE}-secrets",
        "custom_extension_repository": f"{NOWHERE}-extension-repository",
        "autoinstall_extension_repository": f"{NOWHERE}-extension-repository",
    }
    config.update(extra)
    return config


def lock(con: Any) -> None:
    """Safe mode: no file or network access from SQL from now on (read_text, COPY ... TO,
    ATTACH, glob, read_csv of a path or URL, LOAD), and no setting can change. What netsql
    loads through the Python API (its collectors, registered tables) still works."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def explain(message: str) -> str:
    """DuckDB's message about the paths above, said plainly."""
    if '"/dev/null"' in message or NOWHERE in message:
        return ("extensions are not installed or loaded from files by netsql (no network "
                "access, nothing written to your home; see docs/security.md): " + message)
    if "disabled by configuration" in message or "disabled through configuration" in message \
            or "has been locked" in message:
        return f"refused in --safe mode (see docs/security.md): {message}"
    return message


def configured_safe() -> bool:
    """Whether the config file (root's own under sudo) sets ``safe = true``
    (docs/security.md); the shell validates the file and warns about it. A file this
    user cannot read sets nothing."""
    from netsql.paths import user_dirs

    try:
        f = open(user_dirs().config_file, "rb")
    except OSError:
        return False
    import tomllib

    with f:
        try:
            return tomllib.load(f).get("safe") is True
        except (OSError, tomllib.TOMLDecodeError):
            return False
