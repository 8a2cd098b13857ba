"""A small SQL scanner for the shell: good enough to tell whether a statement is
finished, to split typed or read input into SQL and dot-commands, and to find which
tables (and under which aliases) a statement names. DuckDB parses the statements
themselves; this only has to be right about strings, comments and semicolons, and
tolerant of half-typed text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*(?:.|\n)*?(?P<cend>\*/|\Z))
  | (?P<estring>[eE]'(?:[^'\\]|\\(?:.|\n)|'')*(?P<eend>'|\Z))
  | (?P<string>'(?:[^']|'')*(?P<send>'|\Z))
  | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$(?:.|\n)*?(?P<dend>\$(?P=tag)?\$|\Z))
  | (?P<qident>"(?:[^"]|"")*(?P<qend>"|\Z))
  | (?P<word>[A-Za-z_\u0080-\U0010ffff][\w$\u0080-\U0010ffff]*)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
  | (?P<punct>::|<>|!=|<=|>=|\|\||->>|->|.)
""", re.VERBOSE)

_END = {"comment": "cend", "string": "send", "estring": "eend", "dollar": "dend",
        "qident": "qend"}


@dataclass(frozen=True)
class Token:
    kind: str  # word, qident, string, number, punct (comments and space are dropped)
    text: str
    start: int
    closed: bool = True  # False: a string, quoted name or comment runs to the end

    @property
    def lower(self) -> str:
        return self.text.lower()

    @property
    def name(self) -> str:
        """The identifier this token names (quotes removed; bare words lower-cased)."""
        if self.kind == "qident":
            inner = self.text[1:-1] if self.closed else self.text[1:]
            return inner.replace('""', '"')
        return self.text.lower()


def tokens(text: str, *, keep_comments: bool = False) -> Iterator[Token]:
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "punct"
        if kind == "space":
            continue
        end = _END.get(kind)
        # A string, quoted name or block comment that reached the end of the text
        # without its closing quote is open (the closer group matched nothing).
        closed = end is None or bool(m.group(end)) or m.group().startswith("--")
        if kind == "comment" and closed and not keep_comments:
            continue
        kind = "string" if kind in ("dollar", "estring") else kind
        yield Token(kind, m.group(), m.start(), closed)


def is_complete(sql: str) -> bool:
    """True when ``sql`` is blank or ends with a semicolon outside strings and comments."""
    last = None
    for tok in tokens(sql, keep_comments=True):
        if not tok.closed:
            return False
        if tok.kind != "comment":
            last = tok
    return last is None or last.text == ";"


def is_blank(sql: str) -> bool:
    """Only whitespace and comments."""
    return all(t.kind == "comment" and t.closed for t in tokens(sql, keep_comments=True))


def split_input(text: str) -> list[tuple[str, str]]:
    """Input -> [("command", line) | ("sql", statements)], in order.

    A line starting with ``.`` is a dot-command when no SQL is pending; SQL runs up to
    each line that completes it (several statements on one line stay together).
    Unfinished SQL at the end is returned too (the caller decides whether to run it).
    """
    chunks: list[tuple[str, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        if (not pending or is_blank("\n".join(pending))) and line.lstrip().startswith("."):
            pending = []
            chunks.append(("command", line.strip()))
            continue
        pending.append(line)
        sql = "\n".join(pending)
        if line.strip() and is_complete(sql) and not is_blank(sql):
            chunks.append(("sql", sql))
            pending = []
    sql = "\n".join(pending)
    if pending and not is_blank(sql):
        chunks.append(("sql", sql))
    return chunks


def input_complete(text: str) -> bool:
    """Should Enter run this buffer (else it inserts a newline)?"""
    if not text.strip():
        return True
    chunks = split_input(text)
    if not chunks:
        return True  # only comments
    kind, last = chunks[-1]
    if kind == "command":
        return True
    if last.strip().lower().rstrip(";").strip() in ("quit", "exit"):
        return True
    return is_complete(last)


# -- tables in scope, for completion -----------------------------------------------

#: Words that end a FROM item: after a table name they are never its alias.
CLAUSE_WORDS = frozenset("""
    where group order limit offset having window qualify union except intersect join
    inner left right full outer cross natural positional asof anti semi lateral on using
    as select from set values returning sample tablesample using pivot unpivot fetch for
    into default
""".split())

_TABLE_KEYWORDS = frozenset({"from", "join", "into", "update", "table", "describe",
                             "summarize", "truncate"})


@dataclass(frozen=True)
class Scope:
    """Tables a statement names: alias (or table name) -> table name."""

    aliases: dict[str, str]

    @property
    def tables(self) -> list[str]:
        return list(dict.fromkeys(self.aliases.values()))


def scope(stmt: str) -> Scope:
    """Tables named after FROM/JOIN/UPDATE/INTO (comma lists included) and their aliases."""
    toks = [t for t in tokens(stmt) if t.closed]
    aliases: dict[str, str] = {}
    i = 0
    while i < len(toks):
        word = toks[i].lower if toks[i].kind == "word" else ""
        if word not in ("from", "join", "update", "into"):
            i += 1
            continue
        i += 1
        while i < len(toks) and toks[i].kind in ("word", "qident"):
            if toks[i].kind == "word" and toks[i].lower in CLAUSE_WORDS:
                break
            name = toks[i].name
            i += 1
            while i + 1 < len(toks) and toks[i].text == "." and toks[i + 1].kind in (
                    "word", "qident"):
                name = toks[i + 1].name  # schema.table: keep the table
                i += 2
            if i < len(toks) and toks[i].text == "(":  # a table function call
                break
            alias = name
            if i < len(toks) and toks[i].kind == "word" and toks[i].lower == "as":
                i += 1
            if i < len(toks) and (toks[i].kind == "qident" or (
                    toks[i].kind == "word" and toks[i].lower not in CLAUSE_WORDS)):
                alias = toks[i].name
                i += 1
            aliases[alias] = name
            aliases.setdefault(name, name)
            if word == "from" and i < len(toks) and toks[i].text == ",":
                i += 1
                continue
            break
    return Scope(aliases)


@dataclass(frozen=True)
class Context:
    """Where the cursor is, for completion."""

    kind: str  # "table", "column", "alias" (naming an alias: suggest nothing), "none"
    word: str  # the partial word before the cursor
    qualifier: str | None  # "s" in "s.rem"
    scope: Scope
    start: bool = False  # the word is the first of its statement


_WORD_BEFORE = re.compile(r'(?:([A-Za-z_][\w$]*|"(?:[^"]|"")*")\.)?([A-Za-z_][\w$]*)?$')


def context(before: str, after: str = "") -> Context:
    """Completion context for a cursor between ``before`` and ``after``."""
    toks = list(tokens(before, keep_comments=True))
    empty = Scope({})
    if toks and (not toks[-1].closed or (toks[-1].text.startswith("--") and toks[-1].start
                                          + len(toks[-1].text) == len(before))):
        return Context("none", "", None, empty)  # inside a string, quoted name or comment
    start = 0
    for t in toks:
        if t.text == ";":
            start = t.start + 1
    stmt_before = before[start:]
    end = next((t.start for t in tokens(after) if t.text == ";"), len(after))
    sc = scope(stmt_before + after[:end])
    m = _WORD_BEFORE.search(stmt_before)
    word = (m.group(2) or "") if m else ""
    qualifier = None
    if m and m.group(1) is not None:
        qualifier = Token("qident" if m.group(1).startswith('"') else "word",
                          m.group(1), 0).name
    head = stmt_before[:m.start()] if m else stmt_before
    prev = [t for t in tokens(head) if t.kind != "comment"]
    if qualifier is not None:
        return Context("column", word, qualifier, sc)
    last = prev[-1].lower if prev else ""
    if not prev or last == ";":
        return Context("column", word, None, sc, start=True)
    if last in _TABLE_KEYWORDS:
        return Context("table", word, None, sc)
    if last == "," and _clause(prev) == "from":
        return Context("table", word, None, sc)
    if (len(prev) >= 2 and prev[-1].kind in ("word", "qident") and last not in CLAUSE_WORDS
            and prev[-2].lower in ("from", "join")):
        return Context("alias", word, None, sc)
    return Context("column", word, None, sc)


def _clause(toks: list[Token]) -> str:
    """The innermost clause keyword the tokens end in (parentheses respected)."""
    depth = 0
    for t in reversed(toks):
        if t.text == ")":
            depth += 1
        elif t.text == "(":
            if depth == 0:
                return ""
            depth -= 1
        elif depth == 0 and t.kind == "word" and t.lower in (
                "from", "select", "where", "on", "group", "order", "having", "join", "set"):
            return t.lower
    return ""
