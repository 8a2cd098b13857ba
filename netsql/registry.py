"""The one list of tables (and, beside it, formats): explicit, no import side effects."""

from __future__ import annotations

from netsql.schema import Setup, Table


def default_tables() -> list[Table]:
    """Every table this platform offers, in documentation order."""
    from netsql.tables import (
        capture_stats,
        dns_queries,
        flows,
        interfaces,
        listening_ports,
        net_namespaces,
        processes,
        routes,
        sockets,
    )

    return [
        processes.TABLE,
        sockets.TABLE,
        listening_ports.TABLE,
        routes.TABLE,
        interfaces.TABLE,
        net_namespaces.TABLE,
        dns_queries.TABLE,
        flows.TABLE,
        capture_stats.TABLE,
    ]


def default_setups() -> list[Setup]:
    """SQL the engine creates on first mention: the threat-intel functions and views,
    the history views."""
    from netsql.history.views import setup_history
    from netsql.intel import functions

    return [*functions.SETUPS, Setup("history", ("history",), setup_history)]
