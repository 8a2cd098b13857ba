"""``python -m netsql`` and the ``netsql`` command: signal handlers first, then the CLI."""

from netsql import signals

signals.install()  # before anything else is imported (netsql.signals)


def main() -> int:
    import sys

    from netsql.serve import quick

    quick.main(sys.argv[1:])  # a one-liner a resident netsql runs: ends the process here
    from netsql.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
