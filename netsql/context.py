"""The CLI's shared types: where a command reads and writes (``Env``), its exit
statuses, usage errors, the argument types its parsers share, and the one way a
notice reaches stderr.

A leaf, in the manner of httpie's context and status modules: every entry point
(cli, run, serve, the shell, watch, intel) imports these from here, and this module
imports nothing of netsql but the escaping rule.
"""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum
from typing import TextIO

from netsql.escape import escape_control


class ExitStatus(IntEnum):
    """Documented exit statuses (docs/cli.md)."""

    SUCCESS = 0
    ERROR = 1  # an SQL or runtime error (bad statement, unreadable file, capture failed)
    USAGE = 2  # bad flags or arguments
    INTERRUPTED = 130  # Ctrl-C (SIGINT)


#: The output formats, in the order --help and .mode list them (netsql.formats has one
#: formatter per name; a test keeps the two lists equal).
FORMAT_NAMES = ("table", "line", "csv", "json", "jsonl", "markdown")
#: Formats written for people, not programs: results are set apart by a blank line.
HUMAN_FORMATS = ("table", "line", "markdown")
#: Live DNS transactions kept by default (--dns-buffer).
DNS_BUFFER = 100_000


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def notice(stream: TextIO, message: str, kind: str = "") -> None:
    """One line to ``stream`` (stderr): ``netsql: [kind: ]message``, control
    characters made visible."""
    prefix = f"netsql: {kind}: " if kind else "netsql: "
    print(prefix + escape_control(message), file=stream)


def stderr_notice(message: str) -> None:
    notice(sys.stderr, message)


class Env:
    """Where the CLI reads and writes; tests build their own. (A plain class: the
    dataclasses module costs a one-liner 9 ms to import.)"""

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None,
                 stderr: TextIO | None = None, stdin_isatty: bool | None = None,
                 stdout_isatty: bool | None = None, width: int | None = None) -> None:
        self.stdin: TextIO = stdin if stdin is not None else sys.stdin
        self.stdout: TextIO = stdout if stdout is not None else sys.stdout
        self.stderr: TextIO = stderr if stderr is not None else sys.stderr
        self.stdin_isatty = isatty(self.stdin) if stdin_isatty is None else stdin_isatty
        self.stdout_isatty = isatty(self.stdout) if stdout_isatty is None else stdout_isatty
        if width is None:
            if self.stdout_isatty:
                import shutil

                width = shutil.get_terminal_size((100, 24)).columns
            else:
                width = 1_000_000
        self.width: int = width

    def error(self, message: str) -> None:
        notice(self.stderr, message, "error")

    def warn(self, message: str) -> None:
        notice(self.stderr, message, "warning")

    def notice(self, message: str) -> None:
        notice(self.stderr, message)


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """An argument parser that raises UsageError instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"seconds must be between 0 and 86400: {text!r}")
    return value


def port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (1-65535): {text!r}")
    return int(text)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(text: str) -> int:
    """A size in bytes: '500M', '2G', '1.5T', '4096' (K, M, G, T are powers of 1024)."""
    word = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = word[-1:] if word[-1:] in _SIZE_UNITS else ""
    try:
        value = float(word[: len(word) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size (e.g. 500M, 2G): {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a size must be more than 0: {text!r}")
    return int(value * _SIZE_UNITS[unit])
