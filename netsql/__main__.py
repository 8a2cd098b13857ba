"""``python -m netsql`` and the ``netsql`` command: signal handlers first, then the CLI."""

from netsql import signals

signals.install()  # before anything else is imported (netsql.signals)


def main() -> int:
    import sys

    try:
        from netsql.serve import quick

        quick.main(sys.argv[1:])  # a one-liner a resident netsql runs: ends the process here
        from netsql.cli import main as cli_main

        status = cli_main()
    except KeyboardInterrupt:
        # A Ctrl-C whose handler ran only after the CLI's own ``except`` (DuckDB can hold
        # a signal back until its statement has unwound): 130 like any other, never
        # Python's uncaught-KeyboardInterrupt exit by SIGINT.
        status = 130
    # From here to the exit a late signal ends the process with 128 + N at once.
    signals.install()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
