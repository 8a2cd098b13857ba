-- name: new-destinations
-- description: From the recorded history: connections to remote addresses that no
--   process on the same host had connected to in the days before.
-- param: window interval = 24h How far back "new" looks (e.g. 6h, 2d).
-- param: baseline_days int = 7 How many days before the window make the baseline.
-- param: host text = null Only this host.
-- example: netsql --history /var/lib/netsql -q new-destinations
-- example: netsql --history /srv/fleet -q new-destinations -p window=6h -p baseline_days=30
--
-- A destination is new when its remote address (and port) was not connected to from
-- that host in the baseline. A private, loopback or link-local address (10/8,
-- 172.16/12, 192.168/16, 127/8, 169.254/16, fc00::/7, fe80::/10, ::1) names a machine
-- only within its network namespace, as two containers may use one for different
-- machines: it counts as seen before only in the same namespace. One row per host,
-- namespace and destination; remote_host is the name DNS answered for it in that
-- namespace, when the recorder's capture saw it.
WITH recent AS (
    SELECT * FROM history.connections
    WHERE last_seen >= now() - $window AND ($host IS NULL OR host = $host)
),
baseline AS (
    SELECT DISTINCT host, net_namespace, remote_address, remote_port
    FROM history.connections
    WHERE first_seen < now() - $window
      AND last_seen >= now() - $window - to_days($baseline_days)
      AND ($host IS NULL OR host = $host)
)
SELECT r.host, r.net_namespace, r.remote_address, r.remote_port,
       any_value(r.remote_host) AS remote_host,
       list_sort(list_distinct(list(r.process))) AS processes,
       list_sort(list_distinct(list(r.container_id))) AS containers, count(*) AS connections,
       min(r.first_seen) AS first_seen, max(r.last_seen) AS last_seen,
       sum(r.bytes_sent) AS bytes_sent, sum(r.bytes_received) AS bytes_received
FROM recent r
ANTI JOIN baseline b
    ON b.host = r.host AND b.remote_address = r.remote_address
   AND b.remote_port = r.remote_port
   AND (b.net_namespace IS NOT DISTINCT FROM r.net_namespace
        OR NOT regexp_matches(r.remote_address, '^(::ffff:)?(10\.|127\.|192\.168\.|'
            || '172\.(1[6-9]|2[0-9]|3[01])\.|169\.254\.)|^f[cd][0-9a-f]{2}:|'
            || '^fe[89ab][0-9a-f]:|^::1$'))
GROUP BY r.host, r.net_namespace, r.remote_address, r.remote_port
ORDER BY first_seen DESC;
