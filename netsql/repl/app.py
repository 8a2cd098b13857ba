"""The prompt_toolkit session: prompt, keys, highlighting, toolbar, history, loop.

``run_shell(env)`` is what ``netsql`` with no SQL on a terminal runs; everything else
about running input lives in :mod:`netsql.repl.shell`.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prompt_toolkit import PromptSession
from prompt_toolkit.document import Document
from prompt_toolkit.enums import EditingMode
from prompt_toolkit.filters import has_focus, is_done
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.lexers import Lexer, PygmentsLexer
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style, merge_styles, style_from_pygments_cls

from netsql.paths import user_dirs
from netsql.repl.completer import ShellCompleter
from netsql.repl.config import Config, load_config, prepare_history
from netsql.repl.face import Command, Outcome
from netsql.repl.shell import Shell, Source
from netsql.repl.sqltext import input_complete

if TYPE_CHECKING:
    from netsql.collect import State
    from netsql.context import Env, ExitStatus

UI_STYLE = {
    "prompt": "bold",
    "prompt.capture": "bold fg:ansired",
    "continuation": "fg:ansibrightblack",
    "bottom-toolbar": "noreverse bg:ansibrightblack fg:ansiwhite",
    "bottom-toolbar.on": "bold fg:ansigreen",
    "bottom-toolbar.off": "",
    "completion-menu.meta.completion": "bg:ansibrightblack fg:ansiwhite",
    "completion-menu.meta.completion.current": "bg:ansiwhite fg:ansiblack",
}


class ShellLexer(Lexer):
    """SQL highlighted by Pygments; a dot-command's name as a keyword."""

    def __init__(self) -> None:
        from pygments.lexers.sql import SqlLexer

        self.sql = PygmentsLexer(SqlLexer)

    def lex_document(self, document: Document) -> Any:
        if document.text.lstrip().startswith("."):
            def line(n: int) -> StyleAndTextTuples:
                text = document.lines[n]
                if n == 0:
                    head, _, rest = text.partition(" ")
                    return [("class:pygments.keyword", head), ("", " " + rest if rest or
                                                               text.endswith(" ") else "")]
                return [("", text)]
            return line
        return self.sql.lex_document(document)


def build_style(theme: str, warnings: list[str]) -> Style | Any:
    ui = Style.from_dict(UI_STYLE)
    if theme == "none":
        return ui
    from pygments.styles import get_style_by_name
    from pygments.util import ClassNotFound

    try:
        pyg = get_style_by_name(theme)
    except ClassNotFound:
        warnings.append(f"unknown theme {theme!r}; using 'default'")
        pyg = get_style_by_name("default")
    return merge_styles([style_from_pygments_cls(pyg), ui])


def toolbar(shell: Shell) -> StyleAndTextTuples:
    st = shell.capture_status()
    parts: StyleAndTextTuples = [("", " ")]
    if shell.capture() is None:
        parts.append(("", "capture: n/a"))
    elif st.get("running"):
        ifaces = ",".join(str(i) for i in st.get("interfaces") or []) or "all"
        parts += [("class:bottom-toolbar.on", "capture: on"),
                  ("", f" ({ifaces}) {st.get('messages', 0)} msgs, "
                       f"{st.get('dropped', 0)} dropped")]
    else:
        parts.append(("", "capture: off"))
    parts.append(("", f" │ mode: {shell.mode} │ timer: {'on' if shell.timer else 'off'}"
                      f" │ maxrows: {shell.maxrows or 'all'} │ pager: "
                      f"{'on' if shell.pager else 'off'}"
                      + (f" │ output: {shell.output_path}" if shell.output_path else "")
                      + " │ Ctrl-D quits "))
    return parts


def prompt_text(shell: Shell, host: str) -> StyleAndTextTuples:
    parts: StyleAndTextTuples = [("class:prompt", f"netsql@{host}")]
    if shell.capture_status().get("running"):
        parts.append(("class:prompt.capture", " [capture]"))
    parts.append(("class:prompt", "> "))
    return parts


def key_bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("enter", filter=has_focus("DEFAULT_BUFFER") & ~is_done)
    def _enter(event: KeyPressEvent) -> None:
        """Run a finished statement (ends with ';') or dot-command; else a new line."""
        b = event.current_buffer
        if b.complete_state and b.complete_state.current_completion:
            b.apply_completion(b.complete_state.current_completion)
            return
        if input_complete(b.text):
            b.validate_and_handle()
        else:
            b.newline(copy_margin=False)

    @kb.add("c-space")
    def _complete(event: KeyPressEvent) -> None:
        event.current_buffer.start_completion(select_first=False)

    return kb


def make_history(config: Config, env: Env) -> History:
    path, why = prepare_history(user_dirs(), config.history_size)
    if why:
        env.warn(why)
    return FileHistory(str(path)) if path is not None else InMemoryHistory()


def build_session(shell: Shell, history: History, completer: ShellCompleter,
                  color: bool = True) -> PromptSession[str]:
    config = shell.config
    host = socket.gethostname().split(".")[0] or "localhost"
    warnings: list[str] = []
    style = build_style(config.theme if color else "none", warnings)
    for w in warnings:
        shell.env.warn(w)
    width = len(f"netsql@{host}> ")

    def continuation(w: int, line_number: int, is_soft_wrap: int) -> StyleAndTextTuples:
        return [("class:continuation", "...> ".rjust(max(w, width)))]

    session: PromptSession[str] = PromptSession(
        message=lambda: prompt_text(shell, host),
        multiline=True,
        prompt_continuation=continuation,
        lexer=ShellLexer() if config.theme != "none" else None,
        completer=completer,
        complete_while_typing=config.complete_while_typing,
        history=history,
        enable_history_search=False,
        search_ignore_case=True,
        key_bindings=key_bindings(),
        editing_mode=EditingMode.VI if config.keys == "vi" else EditingMode.EMACS,
        bottom_toolbar=lambda: toolbar(shell),
        style=style,
        include_default_pygments_style=False,
        color_depth=None if color else ColorDepth.DEPTH_1_BIT,
        refresh_interval=1.0 if shell.capture() is not None else 0,
        enable_suspend=True,
        tempfile_suffix=".sql",
    )
    return session


def run_shell(env: Env, state: State | None = None, *,
              commands: Sequence[Command] | None = None,
              sources: dict[str, Source] | None = None,
              osquery: bool = False) -> ExitStatus:
    """The interactive shell.

    ``state``: the engine's state, e.g. a capture in ``state.capture`` (``.capture``,
    the prompt and the toolbar use it when present). ``commands``: the dot-command list
    (default :func:`~netsql.repl.commands.default_commands`; pass it plus your own).
    ``sources``: extra completion sources for command arguments, e.g.
    ``{"query": lambda: [(name, description), ...]}`` for ``@query``. ``osquery``:
    start in osquery mode (docs/osquery.md).
    """
    from netsql.context import ExitStatus
    from netsql.engine import Engine

    config = load_config(user_dirs().config_file)
    for w in config.warnings:
        env.warn(w)
    if config.history_dir and state is not None and not state.history:  # --history wins
        state.history = os.path.expanduser(config.history_dir)
    engine = Engine(state=state)
    from netsql.osquery.dialect import load_tables

    load_tables(engine)  # osquery.TABLE in completion and .tables
    shell = Shell(engine, env, config, commands=commands, sources=sources)
    if osquery or config.osquery:  # --osquery, or osquery = true in the config
        from netsql.osquery.dialect import set_mode

        set_mode(engine, True)
    color = not os.environ.get("NO_COLOR") and config.theme != "none"
    history = make_history(config, env)
    completer = ShellCompleter(shell.catalog, shell.commands, shell.formats, shell.sources)
    session = build_session(shell, history, completer, color=color)
    while True:
        try:
            text = session.prompt()
        except KeyboardInterrupt:  # Ctrl-C at the prompt clears the line
            continue
        except EOFError:  # Ctrl-D
            break
        if shell.run_input(text) is Outcome.QUIT:
            break
    shell.set_output(None)
    sys.stdout.flush()
    return ExitStatus.SUCCESS

