"""History: what `netsql serve --record DIR` saw, kept as immutable Parquet files that
any engine reads (docs/history.md).

    DIR/<table>/host=<hostname>/date=<YYYY-MM-DD>/<file>.parquet

layout.py owns the path rules, tables.py declares what each recorded table holds,
store.py writes, retains and compacts, views.py makes the ``history.<table>`` views.
"""
