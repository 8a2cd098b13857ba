"""Where a resident netsql listens (docs/serve.md): the one copy of the rule, in a leaf
of the standard library's os alone, because every one-liner reads it before anything
else (netsql.paths re-exports it with the other paths)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def socket_path(environ: Mapping[str, str] | None = None, euid: int | None = None) -> str:
    """$NETSQL_SOCKET, else /run/netsql/netsql.sock for root, else
    $XDG_RUNTIME_DIR/netsql/netsql.sock (or /tmp/netsql-UID/netsql.sock)."""
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    given = environ.get("NETSQL_SOCKET")
    if given is not None:
        return given
    if euid == 0:
        base = "/run/netsql"
    else:
        runtime = environ.get("XDG_RUNTIME_DIR")
        base = os.path.join(runtime, "netsql") if runtime else f"/tmp/netsql-{euid}"
    return os.path.join(base, "netsql.sock")
