-- name: dns-failures
-- description: Failed lookups (NXDOMAIN, SERVFAIL) by process, then by process and name:
--   a burst of NXDOMAIN for many different names is typical of DGA malware.
-- param: rcodes text[] = 'NXDOMAIN,SERVFAIL' Response codes that count as failures.
-- param: min_failures int = 1 Only processes with at least this many failures.
-- param: forwarders bool = false Count stub resolvers' and forwarders' upstream queries
--   too (each application query that goes through one is then counted twice).
-- param: since interval = null Only queries seen within this long (e.g. 15m, 2h).
-- example: netsql --capture 60 -q dns-failures
-- example: netsql --capture 60 -q dns-failures -p min_failures=20 -p rcodes=NXDOMAIN
--
-- The first table has one row per process (and network namespace: queries no process
-- was found for are counted per namespace): failures, how many distinct names failed,
-- the share of its queries that failed, a sample of the names, and when. A process
-- that asks for dozens of random-looking names and gets NXDOMAIN for most is
-- generating domains (DGA) until one is registered. The second table lists each
-- failing name of those processes with its count.
WITH q AS (
    SELECT * FROM dns_queries
    WHERE (NOT forwarder OR forwarder IS NULL OR $forwarders)
      AND ($since IS NULL OR ts >= (now() AT TIME ZONE 'UTC') - $since)
)
SELECT pid, process, net_namespace,
       count(*) FILTER (WHERE list_contains($rcodes, rcode)) AS failures,
       count(DISTINCT query) FILTER (WHERE list_contains($rcodes, rcode)) AS names,
       count(*) FILTER (WHERE rcode = 'NXDOMAIN') AS nxdomain,
       count(*) FILTER (WHERE rcode = 'SERVFAIL') AS servfail,
       count(*) AS queries,
       round(100.0 * count(*) FILTER (WHERE list_contains($rcodes, rcode)) / count(*), 1)
           AS percent_failed,
       list(DISTINCT query ORDER BY query) FILTER (WHERE list_contains($rcodes, rcode))[1:5]
           AS sample,
       min(ts) FILTER (WHERE list_contains($rcodes, rcode)) AS first_seen,
       max(ts) FILTER (WHERE list_contains($rcodes, rcode)) AS last_seen,
       date_trunc('second', (now() AT TIME ZONE 'UTC')
           - max(ts) FILTER (WHERE list_contains($rcodes, rcode))) AS ago
FROM q
GROUP BY pid, process, net_namespace
HAVING count(*) FILTER (WHERE list_contains($rcodes, rcode)) >= greatest($min_failures, 1)
ORDER BY names DESC, failures DESC, pid;

WITH q AS (
    SELECT * FROM dns_queries
    WHERE (NOT forwarder OR forwarder IS NULL OR $forwarders)
      AND ($since IS NULL OR ts >= (now() AT TIME ZONE 'UTC') - $since)
),
failing AS (
    SELECT pid, process, net_namespace FROM q WHERE list_contains($rcodes, rcode)
    GROUP BY pid, process, net_namespace HAVING count(*) >= greatest($min_failures, 1)
)
SELECT q.pid, q.process, q.net_namespace, q.query, q.qtype, q.rcode, count(*) AS times,
       min(q.ts) AS first_seen, max(q.ts) AS last_seen,
       date_trunc('second', (now() AT TIME ZONE 'UTC') - max(q.ts)) AS ago
FROM q JOIN failing f ON f.pid IS NOT DISTINCT FROM q.pid
                     AND f.process IS NOT DISTINCT FROM q.process
                     AND f.net_namespace IS NOT DISTINCT FROM q.net_namespace
WHERE list_contains($rcodes, q.rcode)
GROUP BY ALL
ORDER BY q.pid, times DESC, q.query, q.qtype;
