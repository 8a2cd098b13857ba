"""The full-screen watch on a terminal (prompt_toolkit, imported only when it runs).

Refreshes run in a worker thread on a fixed schedule; the screen is drawn from
:class:`netsql.watch.view.View`, which holds everything shown. Keys: ``q`` (also
Ctrl-C) quits, ``p`` pauses, ``d`` toggles delta mode (counters as per-second rates),
``<`` ``>`` (or Left/Right) choose the sort column, ``r`` reverses it, space refreshes
now, Up/Down/PgUp/PgDn/Home/End scroll, Tab moves between statements.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from prompt_toolkit.application import Application
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import Layout, Window
from prompt_toolkit.layout.controls import UIContent, UIControl
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style

from netsql.watch.runner import Refresh, Watch
from netsql.watch.stream import next_tick
from netsql.watch.view import View

STYLE = {
    "title": "reverse",
    "paused": "bold fg:ansiyellow",
    "header": "bold",
    "sorted": "underline",
    "pane": "bold",
    "new": "fg:ansigreen",
    "gone": "fg:ansired",
    "changed": "bold",
    "error": "bold fg:ansired",
    "warning": "fg:ansiyellow",
    "legend": "fg:ansibrightblack",
    "keys": "reverse",
}


class _Screen(UIControl):
    def __init__(self, view: View, lock: threading.Lock) -> None:
        self.view = view
        self.lock = lock

    def create_content(self, width: int, height: int) -> UIContent:
        with self.lock:
            lines: list[Any] = self.view.lines(width, height)
        return UIContent(get_line=lambda i: lines[i], line_count=len(lines),
                         show_cursor=False)

    def is_focusable(self) -> bool:
        return True


class WatchScreen:
    """One full-screen watch: ``run()`` returns when the user quits."""

    def __init__(self, watch: Watch, first: Refresh, *, interval: float, title: str) -> None:
        self.watch = watch
        self.interval = interval
        self.view = View(title, interval)
        self.view.update(first)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.force = False
        self.busy = False
        self.start = first.at
        color = ColorDepth.DEPTH_1_BIT if os.environ.get("NO_COLOR") else None
        self.app: Application[None] = Application(
            layout=Layout(Window(_Screen(self.view, self.lock))),
            key_bindings=self._keys(), style=Style.from_dict(STYLE), full_screen=True,
            mouse_support=False, color_depth=color)

    # -- keys --------------------------------------------------------------------------
    def _keys(self) -> KeyBindings:
        kb = KeyBindings()
        view = self.view

        def act(*keys: str) -> Any:
            def register(fn: Any) -> Any:
                for key in keys:
                    @kb.add(key)
                    def _(event: KeyPressEvent) -> None:
                        with self.lock:
                            fn()
                return fn
            return register

        @kb.add("q")
        @kb.add("Q")
        @kb.add("c-c")
        def _quit(event: KeyPressEvent) -> None:
            self.quit()

        act("p")(view.toggle_pause)
        act("d")(view.toggle_delta)
        act("<", "left")(lambda: view.cycle_sort(-1))
        act(">", "right")(lambda: view.cycle_sort(1))
        act("r")(view.reverse)
        act("tab")(view.next_pane)
        act("up")(lambda: view.scroll_by(-1))
        act("down")(lambda: view.scroll_by(1))
        act("pageup")(lambda: view.page(-1))
        act("pagedown")(lambda: view.page(1))
        act("home")(lambda: view.scroll_by(-10**9))
        act("end")(lambda: view.scroll_by(10**9))

        @kb.add("space")
        def _now(event: KeyPressEvent) -> None:
            self.force = True
            self.wake.set()

        return kb

    def quit(self) -> None:
        self.stop.set()
        self.wake.set()
        if self.busy:
            self.watch.interrupt()
        if self.app.is_running:
            try:
                self.app.exit()
            except Exception:  # already exiting
                pass

    # -- refreshing --------------------------------------------------------------------
    def _worker(self) -> None:
        while not self.stop.is_set():
            self.start = next_tick(self.start, self.interval, time.monotonic())
            self.wake.wait(max(self.start - time.monotonic(), 0.0))
            self.wake.clear()
            if self.stop.is_set():
                break
            forced, self.force = self.force, False
            if self.view.paused and not forced:
                continue
            self.busy = True
            try:
                refresh = self.watch.refresh()
            except Exception as exc:  # a bug below us: shown, and the watch goes on
                with self.lock:
                    self.view.error = f"internal error: {type(exc).__name__}: {exc}"
                continue
            finally:
                self.busy = False
            if self.stop.is_set():
                break
            with self.lock:
                self.view.update(refresh)
            self.app.invalidate()

    def _terminate(self, signum: int, frame: FrameType | None) -> None:
        loop = getattr(self.app, "loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(self.quit)

    def run(self) -> None:
        worker = threading.Thread(target=self._worker, name="netsql-watch", daemon=True)
        old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                old[sig] = signal.signal(sig, self._terminate)
        worker.start()
        try:
            self.app.run()
        finally:
            for num, handler in old.items():
                signal.signal(num, handler)
            self.stop.set()
            self.wake.set()
            if worker.is_alive() and self.busy:
                self.watch.interrupt()
            worker.join(10)
            cancel = self.watch.engine.state.cancel
            if cancel is not None:
                cancel.clear()


def run_screen(watch: Watch, first: Refresh, *, interval: float, title: str) -> None:
    WatchScreen(watch, first, interval=interval, title=title).run()
