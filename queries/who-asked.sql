-- name: who-asked
-- description: From the recorded history: which processes, on which hosts and in which
--   containers, asked for a domain in a time range, and what DNS answered them.
-- param: domain text (required) The name, e.g. vmp.boldchat.com (case and a trailing
--   dot do not matter).
-- param: subdomains bool = false Also every name under the domain (*.domain).
-- param: since timestamp = null From this time (UTC); default: 24 hours ago.
-- param: until timestamp = null Until this time (UTC); default: now.
-- param: host text = null Only this host (the recorder's host= partition).
-- example: netsql --history /var/lib/netsql -q who-asked -p domain=vmp.boldchat.com
-- example: netsql --history /srv/fleet -q who-asked -p domain=boldchat.com -p subdomains=yes -p since='2026-11-30 03:00'
--
-- Reads history.dns_queries (netsql serve --record DIR, then netsql --history DIR). One
-- row per host, namespace, process and name: how many times, first and last time.
WITH target AS (SELECT lower(rtrim(trim($domain), '.')) AS domain)
SELECT d.host, d.net_namespace, d.container_id, d.pid, d.process, d.query,
       list_sort(list_distinct(flatten(list(d.answers)))) AS answers, count(*) AS times,
       min(d.ts) AS first_seen, max(d.ts) AS last_seen
FROM history.dns_queries d, target t
WHERE (d.query = t.domain OR ($subdomains AND d.query LIKE '%.' || t.domain))
  AND d.ts >= coalesce($since::TIMESTAMPTZ, now() - INTERVAL 1 DAY)
  AND d.ts <= coalesce($until::TIMESTAMPTZ, now())
  AND ($host IS NULL OR d.host = $host)
GROUP BY ALL
ORDER BY last_seen DESC, d.host, d.pid;
