"""SQL for threat intel: macros usable in any query, and the views ``intel``,
``intel_sources`` and ``flagged``. All of it is DuckDB SQL (no Python per row), created
by the engine the first time a statement mentions one of the names (SETUP), so
``netsql -e "SELECT 1"`` pays nothing for it.

Matching is exact and joins by hash: a DNS name is expanded into its suffixes on label
boundaries ('a.evil.com' -> 'a.evil.com', 'evil.com', 'com') and those are joined on
equality with the indicators' ``host``; addresses are numbers in one 128-bit space
(IPv4 mapped into ::ffff:0:0/96) joined on ``BETWEEN lo AND hi``. The ``inet``
extension is not needed. List comprehensions stand in for ``let``:
``[f(x) for x in [expr]][1]`` computes ``expr`` once.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from netsql.collect import State
from netsql.errors import NetsqlError
from netsql.paths import intel_db
from netsql.schema import Setup

# A few multi-label public suffixes (ICANN and the private ones where attackers rent
# subdomains); registered_domain() is naive beyond these (see docs/intel.md).
PUBLIC_SUFFIXES = (
    "co.uk org.uk me.uk ltd.uk plc.uk net.uk ac.uk gov.uk com.au net.au org.au edu.au "
    "gov.au co.nz net.nz org.nz co.jp ne.jp or.jp ac.jp go.jp co.kr or.kr com.cn net.cn "
    "org.cn gov.cn edu.cn com.hk com.tw com.sg com.my co.in net.in org.in co.id co.th "
    "com.br net.br org.br gov.br com.ar com.mx com.co com.pe com.tr com.ua com.pl co.za "
    "co.il org.il com.vn com.ph com.pk com.ng com.eg com.sa "
    "github.io githubusercontent.com gitlab.io blogspot.com herokuapp.com appspot.com "
    "cloudfront.net azurewebsites.net firebaseapp.com web.app pages.dev workers.dev "
    "netlify.app vercel.app ngrok.io ngrok-free.app trycloudflare.com r2.dev glitch.me "
    "onrender.com fly.dev duckdns.org ddns.net no-ip.org hopto.org zapto.org sytes.net "
    "servehttp.com dyndns.org myftp.org s3.amazonaws.com").split()

_V4_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_RE = f"{_V4_OCTET}(\\.{_V4_OCTET}){{3}}"
_PSL = "[" + ", ".join(f"'{s}'" for s in PUBLIC_SUFFIXES) + "]"


def _let(var: str, expr: str, body: str) -> str:
    """``body`` with ``var`` bound to ``expr``, computed once: a macro argument used
    twice would otherwise be expanded (and evaluated) twice, nested macros exponentially."""
    return f"[{body} for {var} in [{expr}]][1]"


#: name -> (arguments, body, description). Public ones are documented in docs/intel.md;
#: helpers start with __netsql_ (the shell's completion leaves those out).
MACROS: dict[str, tuple[str, str, str]] = {
    "domain_norm": ("name", "lower(rtrim(name, '.'))",
                    "The name in lower case without its trailing dot"),
    "domain_labels": ("name", "string_split(domain_norm(name), '.')",
                      "The labels of a name: ['a', 'evil', 'com']"),
    "domain_suffixes": ("name", _let("dl_", "domain_labels(name)",
                                     "[array_to_string(dl_[i:], '.') "
                                     "for i in range(1, len(dl_) + 1)]"),
                        "The name and every parent on label boundaries: ['a.evil.com', "
                        "'evil.com', 'com']"),
    "domain_match": ("name, domain", _let("dm_", "[domain_norm(name), domain_norm(domain)]",
                                          "dm_[1] = dm_[2] OR ends_with(dm_[1], '.' || dm_[2])"),
                     "True when name is domain or a subdomain of it (on label boundaries)"),
    "public_suffix": ("name", _let("pl_", "domain_labels(name)", "coalesce([x for x in [CASE "
                      "WHEN len(pl_) >= 3 THEN array_to_string(pl_[-3:], '.') END, CASE WHEN "
                      "len(pl_) >= 2 THEN array_to_string(pl_[-2:], '.') END] "
                      f"if list_contains({_PSL}, x)][1], pl_[-1])"),
                      "The public suffix: 'com', 'co.uk', 'duckdns.org' (from a short "
                      "built-in list, not the whole Public Suffix List)"),
    "registered_domain": ("name", _let("rl_", "domain_labels(name)", _let(
                          "rn_", "len(string_split(public_suffix(name), '.'))",
                          "array_to_string(CASE WHEN len(rl_) > rn_ THEN rl_[-(rn_ + 1):] "
                          "ELSE rl_ END, '.')")),
                          "The public suffix plus one label: 'example.co.uk'"),
    "subdomain": ("name", _let("sn_", "domain_norm(name)", _let(
                  "sr_", "registered_domain(sn_)", "CASE WHEN length(sn_) > length(sr_) THEN "
                  "sn_[1:length(sn_) - length(sr_) - 1] ELSE '' END")),
                  "What comes before the registered domain: 'a.b' of 'a.b.example.com'"),
    "string_entropy": ("s", _let("se_", "s", "CASE WHEN length(se_) = 0 THEN 0.0 ELSE "
                       # DOUBLE: the same under osquery mode's integer_division
                       "list_sum([-(c / length(se_)::DOUBLE) * log2(c / length(se_)::DOUBLE) "
                       "for c in "
                       "map_values(list_aggregate(string_split(se_, ''), 'histogram'))]) END"),
                       "Shannon entropy of the characters of s, in bits per character"),
    "__netsql_label": ("name", "split_part(registered_domain(name), '.', 1)",
                       "The registered label: 'example' of 'www.example.co.uk'"),
    "domain_entropy": ("name", "string_entropy(__netsql_label(name))",
                       "Shannon entropy (bits per character) of the registered label"),
    "domain_digit_ratio": ("name", _let("dr_", "__netsql_label(name)", "CASE WHEN "
                           "length(dr_) = 0 THEN 0.0 ELSE length(regexp_replace(dr_, '[^0-9]', "
                           "'', 'g')) / length(dr_)::DOUBLE END"),
                           "Share of digits in the registered label, 0 to 1"),
    "domain_consonant_run": ("name", "coalesce(list_max([length(r) for r in "
                             "regexp_extract_all(__netsql_label(name), "
                             "'[bcdfghjklmnpqrstvwxz]+')]), 0)",
                             "Longest run of consonants in the registered label"),
    "__netsql_ipv4": ("a", _let("v4_", "a", f"CASE WHEN regexp_full_match(v4_, '{_V4_RE}') "
                      "THEN " + _let("p_", "string_split(v4_, '.')", "p_[1]::UBIGINT * 16777216 "
                                     "+ p_[2]::UBIGINT * 65536 + p_[3]::UBIGINT * 256 + "
                                     "p_[4]::UBIGINT") + " END"),
                      "An IPv4 address as a number"),
    "__netsql_ipv6_hex": ("a", _let("s6_", "lower(split_part(a, '%', 1))", "CASE WHEN NOT "
                          "contains(s6_, '.') THEN s6_ ELSE " + _let(
                              "v_", "__netsql_ipv4(regexp_extract(s6_, '[^:]*$'))",
                              "CASE WHEN v_ IS NOT NULL THEN regexp_replace(s6_, '[^:]*$', '') "
                              "|| printf('%x:%x', v_ // 65536, v_ % 65536) END") + " END"),
                          "IPv6 text without its zone, a trailing dotted IPv4 part as hex"),
    "__netsql_ipv6_groups": ("s", _let("g6_", "s", "CASE WHEN g6_ IS NULL OR NOT "
                             "regexp_full_match(g6_, '[0-9a-f:]{2,39}') THEN NULL "
                             "WHEN NOT contains(g6_, '::') THEN string_split(g6_, ':') "
                             "WHEN len(string_split(g6_, '::')) <> 2 THEN NULL ELSE " + _let(
                                 "h_", "[x for x in string_split(split_part(g6_, '::', 1), ':') "
                                 "if x <> '']", _let(
                                     "t_", "[x for x in string_split(split_part(g6_, '::', 2), "
                                     "':') if x <> '']", "CASE WHEN len(h_) + len(t_) <= 7 THEN "
                                     "list_concat(h_, ['0' for _ in range(8 - len(h_) - "
                                     "len(t_))], t_) END")) + " END"),
                             "The eight groups of an IPv6 address, :: expanded"),
    "__netsql_ipv6": ("a", _let("g_", "__netsql_ipv6_groups(__netsql_ipv6_hex(a))",
                      "CASE WHEN len(g_) = 8 AND list_bool_and([regexp_full_match(x, "
                      "'[0-9a-f]{1,4}') for x in g_]) THEN ('0x' || array_to_string("
                      "[lpad(x, 4, '0') for x in g_], ''))::UHUGEINT END"),
                      "An IPv6 address as a number"),
    "ip_num": ("address", _let("ia_", "address", "CASE WHEN contains(ia_, ':') THEN "
               "__netsql_ipv6(ia_) ELSE 281470681743360::UHUGEINT + __netsql_ipv4(ia_) END"),
               "An IPv4 or IPv6 address as a UHUGEINT, IPv4 mapped into ::ffff:0:0/96; "
               "NULL when not an address"),
    "__netsql_host_bits": ("cidr", _let("hc_", "cidr", "CASE WHEN NOT contains(hc_, '/') "
                           "THEN 0 ELSE " + _let(
                               "hw_", "CASE WHEN contains(hc_, ':') THEN 128 ELSE 32 END", _let(
                                   "hp_", "TRY_CAST(split_part(hc_, '/', 2) AS INTEGER)",
                                   "CASE WHEN hp_ BETWEEN 0 AND hw_ THEN hw_ - hp_ END"))
                           + " END"),
                           "Host bits of a network"),
    "__netsql_cidr": ("cidr", _let("cc_", "cidr", _let(
                      "cb_", "__netsql_host_bits(cc_)", _let(
                          "cn_", "ip_num(split_part(cc_, '/', 1))", _let(
                              "cs_", "CASE WHEN cb_ = 128 THEN 0::UHUGEINT ELSE "
                              "(cn_ >> cb_::UHUGEINT) << cb_::UHUGEINT END",
                              "[cs_, CASE WHEN cb_ = 0 THEN cs_ ELSE cs_ + ((1::UHUGEINT << "
                              "(cb_ - 1)::UHUGEINT) - 1) * 2 + 1 END]")))),
                      "[first, last] address of a network"),
    "cidr_start": ("cidr", "__netsql_cidr(cidr)[1]", "First address of a network (as ip_num)"),
    "cidr_end": ("cidr", "__netsql_cidr(cidr)[2]", "Last address of a network (as ip_num)"),
    "ip_in_cidr": ("address, cidr", _let("ic_", "__netsql_cidr(cidr)",
                                         "ip_num(address) BETWEEN ic_[1] AND ic_[2]"),
                   "True when the address is in the network (IPv4 or IPv6)"),
}

C = "intel_db"  # netsql.intel.db.CATALOG (not imported: that module imports pyarrow lazily)

#: Columns of the views, for their COMMENTs (the shell's completion) and docs/intel.md.
INTEL_COLUMNS = (
    ("indicator", "VARCHAR", "The indicator as listed: a domain, address, network or URL "
     "(ThreatFox ip:port keeps its port)"),
    ("kind", "VARCHAR", "'domain', 'ip', 'cidr' or 'url'"),
    ("source", "VARCHAR", "The list it came from (netsql intel import --source)"),
    ("threat", "VARCHAR", "What the list says it is ('malware_download', 'botnet_cc', "
     "'drop', ...); NULL when the list does not say"),
    ("tags", "VARCHAR[]", "The list's tags (malware family, ...); NULL when none"),
    ("first_seen", "TIMESTAMP", "When the list first saw it (UTC); NULL when not given"),
    ("imported_at", "TIMESTAMP", "When the list was imported (UTC)"),
)
FLAGGED_COLUMNS = (
    ("seen_in", "VARCHAR", "Where it was seen: 'dns_queries', 'sockets' or 'flows' (UDP and "
     "ICMP flows seen on the wire; TCP connections are in sockets)"),
    ("ts", "TIMESTAMP", "When the DNS query was seen; NULL for sockets and flows (a "
     "snapshot)"),
    ("pid", "INTEGER", "The process that asked, or holds the socket; NULL when unknown"),
    ("process", "VARCHAR", "That process's name"),
    ("name", "VARCHAR", "The DNS name asked for, or the remote_host of a socket or flow"),
    ("address", "VARCHAR", "The remote address of a socket or flow; NULL for DNS queries"),
    ("port", "INTEGER", "The remote port of a socket or flow; NULL for DNS queries"),
    ("net_namespace", "BIGINT", "The network namespace the query was seen in, or the "
     "socket or flow is in (NULL for a capture file's queries)"),
    ("matched", "VARCHAR", "The value that hit: the name, a CNAME target or an address "
     "(a DNS answer or the remote address)"),
    ("indicator", "VARCHAR", "The indicator it hit (intel.indicator)"),
    ("kind", "VARCHAR", "The indicator's kind: 'domain', 'ip', 'cidr' or 'url'"),
    ("source", "VARCHAR", "The list the indicator came from"),
    ("threat", "VARCHAR", "What the list says it is"),
    ("tags", "VARCHAR[]", "The list's tags"),
)

# What flagged checks: one SELECT per table where names and addresses are seen, each
# giving (seen_in, ts, pid, process, name, address, port, net_namespace, names,
# addresses); the view intel_observed is the UNION ALL of those whose tables the engine
# has.
OBSERVED: dict[tuple[str, ...], str] = {
    ("dns_queries",): """
SELECT 'dns_queries' AS seen_in, ts, pid, process, query AS name, NULL::VARCHAR AS address,
       NULL::INTEGER AS port, net_namespace,
       list_concat([query], [a for a, i in answers if answer_types[i] = 'CNAME']) AS names,
       [a for a, i in answers if answer_types[i] IN ('A', 'AAAA')] AS addresses
FROM dns_queries""",
    ("sockets", "processes"): """
SELECT 'sockets', NULL::TIMESTAMP, s.pid, p.name, s.remote_host, s.remote_address,
       s.remote_port, s.net_namespace,
       CASE WHEN s.remote_host IS NULL THEN [] ELSE [s.remote_host] END, [s.remote_address]
FROM sockets s LEFT JOIN processes p ON p.pid = s.pid
WHERE s.remote_address IS NOT NULL""",
    # TCP connections are in sockets already: flows adds what only the wire showed.
    ("flows",): """
SELECT 'flows', NULL::TIMESTAMP, f.pid, f.process, f.remote_host, f.remote_address,
       f.remote_port, f.net_namespace,
       CASE WHEN f.remote_host IS NULL THEN [] ELSE [f.remote_host] END, [f.remote_address]
FROM flows f
WHERE f.protocol <> 'tcp' AND f.remote_address IS NOT NULL""",
}
NOTHING_OBSERVED = """
SELECT NULL::VARCHAR AS seen_in, NULL::TIMESTAMP AS ts, NULL::INTEGER AS pid,
       NULL::VARCHAR AS process, NULL::VARCHAR AS name, NULL::VARCHAR AS address,
       NULL::INTEGER AS port, NULL::BIGINT AS net_namespace, NULL::VARCHAR[] AS names,
       NULL::VARCHAR[] AS addresses
WHERE false"""

VIEWS_SQL = f"""
CREATE OR REPLACE TEMP VIEW intel AS
SELECT i.indicator, i.kind, i.source, i.threat, i.tags, i.first_seen, s.imported_at
FROM {C}.main.indicators i LEFT JOIN {C}.main.sources s USING (source);

CREATE OR REPLACE TEMP VIEW intel_sources AS
SELECT source, format, indicators, imported_at, path, sha256 FROM {C}.main.sources;

CREATE OR REPLACE TEMP MACRO intel_domain_match(name) AS (
    SELECT coalesce(list({{'indicator': i.indicator, 'kind': i.kind, 'source': i.source,
                          'threat': i.threat}} ORDER BY i.source, i.indicator), [])
    FROM (SELECT unnest(domain_suffixes(name)) AS suffix) s
    JOIN {C}.main.indicators i ON i.host = s.suffix
    WHERE i.kind = 'domain' OR i.host = domain_norm(name));

CREATE OR REPLACE TEMP MACRO intel_ip_match(address) AS (
    SELECT coalesce(list({{'indicator': i.indicator, 'kind': i.kind, 'source': i.source,
                          'threat': i.threat}} ORDER BY i.source, i.indicator), [])
    FROM (SELECT ip_num(address) AS num) a
    JOIN (SELECT * FROM {C}.main.indicators WHERE lo IS NOT NULL) i
      ON a.num BETWEEN i.lo AND i.hi);

CREATE OR REPLACE TEMP MACRO intel_lookup(value) AS TABLE
SELECT i.indicator, i.kind, i.source, i.threat, i.tags, i.first_seen, s.imported_at
FROM (SELECT i.* FROM (SELECT unnest(domain_suffixes(value)) AS suffix) x
      JOIN {C}.main.indicators i ON i.host = x.suffix
      WHERE i.kind = 'domain' OR i.host = domain_norm(value)
      UNION ALL
      SELECT * FROM {C}.main.indicators WHERE ip_num(value) BETWEEN lo AND hi) i
LEFT JOIN {C}.main.sources s USING (source)
ORDER BY i.source, i.indicator;

"""

FLAGGED_SQL = f"""
CREATE OR REPLACE TEMP VIEW flagged AS
WITH observed AS (SELECT * FROM intel_observed),
names AS (
    SELECT o.seen_in, o.ts, o.pid, o.process, o.name, o.address, o.port, o.net_namespace,
           n.checked, s.suffix
    FROM observed o, unnest(o.names) AS n(checked),
         unnest(domain_suffixes(n.checked)) AS s(suffix)),
addresses AS (
    SELECT o.seen_in, o.ts, o.pid, o.process, o.name, o.address, o.port, o.net_namespace,
           a.checked, ip_num(a.checked) AS num
    FROM observed o, unnest(o.addresses) AS a(checked)),
ranges AS (SELECT * FROM {C}.main.indicators WHERE lo IS NOT NULL)
SELECT n.seen_in, n.ts, n.pid, n.process, n.name, n.address, n.port, n.net_namespace,
       n.checked AS matched,
       i.indicator, i.kind, i.source, i.threat, i.tags
FROM names n JOIN {C}.main.indicators i ON i.host = n.suffix
WHERE i.kind = 'domain' OR n.suffix = domain_norm(n.checked)
UNION ALL
SELECT a.seen_in, a.ts, a.pid, a.process, a.name, a.address, a.port, a.net_namespace,
       a.checked,
       i.indicator, i.kind, i.source, i.threat, i.tags
FROM addresses a JOIN ranges i ON a.num BETWEEN i.lo AND i.hi;
"""

_VIEW_NOTES: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "intel": ("Indicators of the imported threat-intel lists (netsql intel import).",
              INTEL_COLUMNS),
    "intel_sources": ("The imported threat-intel lists, one row each.", ()),
    "intel_observed": ("What flagged checks: each DNS query and connected socket with the "
                       "names and addresses it involves.", ()),
    "flagged": ("DNS queries and sockets that hit an imported threat-intel list, with the "
                "process and the list.", FLAGGED_COLUMNS),
}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def macros_sql() -> str:
    return ";\n".join(f"CREATE OR REPLACE TEMP MACRO {name}({args}) AS {body}"
                      for name, (args, body, _) in MACROS.items())


def comments_sql(views: Sequence[str]) -> str:
    out = []
    for view in views:
        text, columns = _VIEW_NOTES[view]
        out.append(f"COMMENT ON VIEW {view} IS {_sql_string(text)}")
        out += [f"COMMENT ON COLUMN {view}.{name} IS {_sql_string(desc)}"
                for name, _, desc in columns]
    return ";\n".join(out)


def setup_functions(con: duckdb.DuckDBPyConnection, state: State) -> list[str]:
    con.execute(macros_sql())
    return []


def setup_intel(con: duckdb.DuckDBPyConnection, state: State) -> list[str]:
    """Attach the intel database (read-only) and create the views and lookups over it."""
    from netsql.intel import db

    if C in {r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()")
             .fetchall()}:
        return []  # done by an earlier statement
    con.execute(macros_sql())
    try:
        warnings = db.attach(con, intel_db(state.intel_db))
    except db.IntelDbError as exc:
        raise NetsqlError(str(exc)) from None
    con.execute(VIEWS_SQL)
    con.execute(comments_sql(("intel", "intel_sources")))
    return warnings


def setup_flagged(con: duckdb.DuckDBPyConnection, state: State) -> list[str]:
    """intel_observed, from the tables the engine has, and flagged over it."""
    warnings = setup_intel(con, state)
    have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() "
                                      "WHERE database_name = current_database()").fetchall()}
    selects = [sql for tables, sql in OBSERVED.items() if have.issuperset(tables)]
    con.execute("CREATE OR REPLACE TEMP VIEW intel_observed AS "
                + "\nUNION ALL".join(selects or [NOTHING_OBSERVED]))
    con.execute(FLAGGED_SQL)
    con.execute(comments_sql(("intel_observed", "flagged")))
    return warnings


PUBLIC = tuple(name for name in MACROS if not name.startswith("__"))

SETUPS: Sequence[Setup] = (
    Setup("intel-functions", PUBLIC, setup_functions),
    Setup("intel", ("intel",), setup_intel),
    Setup("intel-flagged", ("flagged",), setup_flagged,
          tables=tuple(dict.fromkeys(t for key in OBSERVED for t in key))),
)
