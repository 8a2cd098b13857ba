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

    def place(self, text: str, start: int) -> None:
        """Make the position relative to ``text``, in which the statement starts at
        offset ``start`` (an error in the second statement of ``-e "A; B"`` points into
        the whole input, as a parse error there does)."""
        if self.line is None or self.column is None:
            return
        before = text[:start]
        if self.line == 1:
            self.column += start - (before.rfind("\n") + 1)
        self.line += before.count("\n")
        self.statement = text

    def __str__(self) -> str:
        if self.line is not None and self.column is not None:
            return f"{self.message} (line {self.line}, column {self.column})"
        return self.message


class Interrupted(NetsqlError):
    pass
