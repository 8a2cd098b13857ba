"""Offline threat intelligence: indicator lists the user keeps, joined to DNS, sockets and
flows inside the same query (docs/intel.md).

    parsers.py    one parser per feed format (stdlib only)
    files.py      reading list files (gzip, zip) and telling their format apart
    db.py         the persistent DuckDB database: open, migrate, import, list, remove,
                  and attaching it (read-only) to a query engine
    dbschema.py   its migrations and schema version
    staging.py    an import's staging area (temporary tables, memory settings)
    functions.py  SQL macros (domain_entropy, ip_in_cidr, ...) and the views intel,
                  intel_sources, flagged; set up lazily by the engine
    cli.py        ``netsql intel import|list|remove|path``
"""
