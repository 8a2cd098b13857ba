"""The one list of tables (and, beside it, formats): explicit, no import side effects."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from netsql.schema import Setup, Table

if TYPE_CHECKING:
    from netsql.osquery.dialect import Host


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


def osquery_tables() -> list[Table]:
    """osquery's tables, shaped as osquery's Linux specs (schema "osquery"; docs/osquery.md),
    in documentation order."""
    from netsql.osquery import (
        arp_cache,
        dns_resolvers,
        etc_hosts,
        groups,
        interface_addresses,
        interface_details,
        iptables,
        listening_ports,
        osquery_info,
        process_open_files,
        process_open_sockets,
        processes,
        routes,
        system_info,
        time,
        users,
    )

    return [
        processes.TABLE,
        process_open_sockets.TABLE,
        listening_ports.TABLE,
        process_open_files.TABLE,
        routes.TABLE,
        interface_addresses.TABLE,
        interface_details.TABLE,
        arp_cache.TABLE,
        etc_hosts.TABLE,
        dns_resolvers.TABLE,
        iptables.TABLE,
        users.TABLE,
        groups.TABLE,
        time.TABLE,
        system_info.TABLE,
        osquery_info.TABLE,
    ]


def default_rewrite(engine: Host) -> Callable[[str], str]:
    """The default engine's statement rewrite: it adds osquery's tables to the engine on
    their first mention (a statement naming the osquery schema, or osquery mode), and
    is off until --osquery (netsql/osquery/dialect.py)."""
    from netsql.osquery.dialect import Dialect

    return Dialect(engine, osquery_tables)


def default_setups() -> list[Setup]:
    """SQL the engine creates on first mention: the threat-intel functions and views,
    the history views."""
    from netsql.history.views import setup_history
    from netsql.intel import functions

    return [*functions.SETUPS, Setup("history", ("history",), setup_history)]
