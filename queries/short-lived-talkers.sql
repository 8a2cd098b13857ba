-- name: short-lived-talkers
-- description: From the recorded history: processes that lived under a second and, in
--   that time, connected somewhere or asked DNS for a name.
-- param: under interval = 1s Processes that lived less than this.
-- param: since timestamp = null From this time (UTC); default: 24 hours ago.
-- param: host text = null Only this host.
-- example: netsql --history /var/lib/netsql -q short-lived-talkers
-- example: netsql --history /var/lib/netsql -q short-lived-talkers -p under=5s
--
-- Pollers and `ss -p` cannot show these processes: they are gone before anyone looks.
-- The recorder keeps each process life (exec to exit) and each connection and DNS
-- transaction with its process id; this joins them on host, pid and time.
WITH brief AS (
    SELECT * FROM history.processes
    WHERE end_time IS NOT NULL AND end_time - start_time < $under
      AND start_time >= coalesce($since::TIMESTAMPTZ, now() - INTERVAL 1 DAY)
      AND ($host IS NULL OR host = $host)
),
talk AS (
    SELECT c.host, c.pid, c.first_seen AS ts, 'connected' AS what,
           c.remote_address || ':' || c.remote_port AS target, c.remote_host
    FROM history.connections c
    UNION ALL
    SELECT d.host, d.pid, d.ts, 'asked', d.query, array_to_string(d.answers, ', ')
    FROM history.dns_queries d
)
SELECT p.host, p.pid, p.name AS process, p.cmdline, p.start_time,
       round(epoch(p.end_time - p.start_time) * 1000) AS lived_ms, t.what, t.target,
       t.remote_host, p.net_namespace, p.container_id
FROM brief p
JOIN talk t ON t.host = p.host AND t.pid = p.pid
           AND t.ts BETWEEN p.start_time - INTERVAL 1 SECOND AND p.end_time + INTERVAL 1 SECOND
ORDER BY p.start_time DESC, t.ts;
