"""User-facing errors: one line each, never a traceback."""

from __future__ import annotations


class NetsqlError(Exception):
    """A user-facing error: one line, no traceback."""

    def __init__(self, message: str, *, line: int | None = None,
                 column: int | None = None, statement: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.statement = statement

    def __str__(self) -> str:
        if self.line is not None and self.column is not None:
            return f"{self.message} (line {self.line}, column {self.column})"
        return self.message


class Interrupted(NetsqlError):
    pass
