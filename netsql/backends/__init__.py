"""Which backend fills the host tables: native on Linux, psutil elsewhere.

``NETSQL_BACKEND=psutil`` chooses psutil anywhere (on Linux: to compare, or where /proc
is restricted); ``NETSQL_BACKEND=native`` insists on the Linux reader. Any other value
is a one-line error (docs/cli.md: exit status 2 from the command line). The choice is
made once per collection pass, so a resident netsql follows each client's variable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from netsql.errors import NetsqlError

if TYPE_CHECKING:  # kept light: the command line checks NETSQL_BACKEND before it forwards
    from netsql.backends.base import Backend
    from netsql.collect import Collection

ENV = "NETSQL_BACKEND"
NAMES = ("native", "psutil")
#: Platforms the host tables serve (the psutil backend off Linux).
PLATFORMS = ("linux", "macos", "freebsd")


class BackendError(NetsqlError):
    """NETSQL_BACKEND names no backend this platform has."""


def on_linux(platform: str | None = None) -> bool:
    return (platform or sys.platform).startswith("linux")


def require_linux(why: str) -> None:
    """A one-line NetsqlError saying ``why`` when not on Linux (tables no backend but
    the kernel's can fill)."""
    if not on_linux():
        raise NetsqlError(why)


def chosen(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """The backend name NETSQL_BACKEND and the platform choose (BackendError if none)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    plat = platform or sys.platform
    if not value:
        return "native" if on_linux(plat) else "psutil"
    if value not in NAMES:
        raise BackendError(f"{ENV}={value!r} is not a backend: use 'native' (Linux) or "
                           "'psutil'")
    if value == "native" and not on_linux(plat):
        raise BackendError(f"{ENV}=native reads Linux's /proc and netlink, which {plat} "
                           "does not have: use 'psutil' (the default here)")
    return value


def make(name: str) -> Backend:
    if name == "native":
        from netsql.backends.linux import LinuxBackend

        return LinuxBackend()
    from netsql.backends.psutil_backend import PsutilBackend

    return PsutilBackend()


def current(coll: Collection) -> Backend:
    """The backend of this collection pass (chosen at its first host table)."""
    return coll.once("backend", lambda: make(chosen()))

