"""osquery compatibility (docs/osquery.md): osquery's tables with its Linux columns and
types in the DuckDB schema ``osquery``, its SQLite dialect (``--osquery``), and packs.

* one module per table (declaration and collector side by side), built on netsql's own
  collectors (procfs, sockdiag, netsql.tables.*);
* :mod:`~netsql.osquery.spec`: how osquery's column types map onto DuckDB's;
* :mod:`~netsql.osquery.dialect`: the statement rewrite (double-quoted strings, LIKE,
  SQLite's date functions, hidden columns) and osquery mode on and off (set_mode);
* :mod:`~netsql.osquery.packs`: pack files and osqueryd's results-log lines.
"""

from __future__ import annotations

from netsql.schema import Table

#: The table modules, in documentation order.
MODULES = ("processes", "process_open_sockets", "listening_ports", "process_open_files",
           "routes", "interface_addresses", "interface_details", "arp_cache", "etc_hosts",
           "dns_resolvers", "iptables", "users", "groups", "time", "system_info",
           "osquery_info")


def tables() -> list[Table]:
    """Every osquery-shaped table (schema ``osquery``)."""
    import importlib

    return [importlib.import_module(f"netsql.osquery.{m}").TABLE for m in MODULES]
