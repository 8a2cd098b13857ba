"""Command line: parse flags and dispatch (netsql intel, netsql serve, the statement
runner in run.py). Nothing here imports the REPL's libraries unless the shell is
started.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from netsql import signals
from netsql.context import Env, ExitStatus


def main(argv: Sequence[str] | None = None, env: Env | None = None) -> int:
    env = env or Env()
    if env is not None and env.stdout is sys.stdout:
        # `netsql ... | head` ends quietly, like other Unix tools.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        # SIGINT, SIGTERM, SIGHUP end netsql at once until arm(), then unwind, so a
        # capture removes its firewall rules (netsql.signals).
        signals.install()  # (python -m netsql and the netsql command did it first)
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        if words[:1] == ["intel"]:  # netsql intel import|list|remove|path (docs/intel.md)
            import duckdb  # noqa: F401  (loaded before a signal may unwind)

            from netsql.intel.cli import main as intel_main

            signals.arm()  # (netsql.signals; what an import must undo is in a finally)
            return intel_main(words[1:], env)
        if words[:1] == ["serve"]:  # the resident engine (docs/serve.md)
            import duckdb  # noqa: F401

            from netsql.serve.server import main as serve_main

            signals.arm()
            return serve_main(words[1:], env)
        if words[:1] == ["help"]:  # netsql help [TOPIC]
            from netsql.helptopics import main as help_main

            return help_main(words[1:], env)
        from netsql import run
        from netsql.flags import parse

        args = parse(words, env)
        if isinstance(args, ExitStatus):
            return args
        status = int(run.run(args, words, env))
        if run.FINISHED:  # a one-shot command (not the shell, a watch or a test's call)
            run.exit_now(signals.status(status))
        return status
    except KeyboardInterrupt:
        env.error("interrupted")
        return ExitStatus.INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
