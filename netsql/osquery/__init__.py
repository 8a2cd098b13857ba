"""osquery compatibility (docs/osquery.md): osquery's tables with its Linux columns and
types in the DuckDB schema ``osquery``, its SQLite dialect (``--osquery``), and packs.

* one module per table (declaration and collector side by side), built on netsql's own
  collectors (procfs, sockdiag, netsql.tables.*); netsql.registry.osquery_tables
  lists them;
* :mod:`~netsql.osquery.spec`: how osquery's column types map onto DuckDB's;
* :mod:`~netsql.osquery.dialect`: the statement rewrite (double-quoted strings, LIKE,
  SQLite's date functions, hidden columns) and osquery mode on and off (set_mode);
* :mod:`~netsql.osquery.packs`: pack files and osqueryd's results-log lines.
"""

