"""The interactive shell (``netsql`` with no SQL, on a terminal).

Layers, from the bottom up; only :mod:`netsql.repl.app` imports prompt_toolkit or
pygments, so ``netsql -e`` never pays for them:

* :mod:`~netsql.repl.config`: the config file (TOML) and XDG paths (history, sudo).
* :mod:`~netsql.repl.sqltext`: a tiny SQL scanner: is a statement finished, how input
  splits into SQL and dot-commands, which tables (and aliases) a statement names.
* :mod:`~netsql.repl.catalog`: what completion and ``.tables``/``.schema`` know: the
  table registry, plus the user's own tables, DuckDB's functions and keywords.
* :mod:`~netsql.repl.shell`: runs input: SQL in a worker thread (Ctrl-C cancels),
  results through the formatters, pager, errors with a caret.
* :mod:`~netsql.repl.commands`: the dot-command registry, an explicit list.
* :mod:`~netsql.repl.pager`: results taller than the terminal.
* :mod:`~netsql.repl.script`: dot-commands in standard input and -f files (no terminal).
* :mod:`~netsql.repl.shelldoc`: docs/shell.md, generated from the two lists above.
* :mod:`~netsql.repl.completer`, :mod:`~netsql.repl.app`: prompt_toolkit.

The shell talks only to the Engine, the table registry and the formats.
"""
