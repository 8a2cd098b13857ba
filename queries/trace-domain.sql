-- name: trace-domain
-- description: From a domain name to the processes that asked for it and the processes
--   connected to the addresses it resolved to, with how often and how long ago.
-- param: domain text (required) The name to trace, e.g. vmp.boldchat.com (case and a
--   trailing dot do not matter).
-- param: subdomains bool = false Also trace every name under the domain (*.domain).
-- example: netsql --capture 30 -q trace-domain -p domain=vmp.boldchat.com
-- example: netsql --pcap dns.pcap -q trace-domain -p domain=boldchat.com -p subdomains=true
--
-- One row per process and relation. 'asked': the process sent the query (times: how
-- many; ago: since the last one). 'forwarded': a stub resolver or forwarder relaying
-- the query upstream (the application behind it has its own 'asked' row). 'connected':
-- the process holds a socket to one of the answers now (times: how many sockets;
-- first_seen: when a recording netsql serve first saw it, NULL without one).
--
-- Answers name sockets of their own network namespace only: two containers may use
-- the same addresses for different hosts. net_namespace and container (the runtime's
-- name for it, else its id; NULL on the host) say where each process runs. Answers
-- read from a capture file carry no namespace and match sockets of every namespace.
--
-- Needs DNS records: run it with --capture SECONDS (live: names the asking process),
-- --pcap FILE (a capture file: no asking process, but processes connected to the
-- answers are still found), or in the shell, which captures from its start.
WITH
target AS (SELECT lower(rtrim(trim($domain), '.')) AS domain),
hits AS (
    SELECT d.* FROM dns_queries d, target t
    WHERE d.query = t.domain OR ($subdomains AND d.query LIKE '%.' || t.domain)
),
answers AS (
    SELECT DISTINCT net_namespace, query, unnest(answers) AS address
    FROM hits WHERE rcode = 'NOERROR'
),
asked AS (
    SELECT CASE WHEN h.forwarder THEN 'forwarded' ELSE 'asked' END AS relation,
           h.pid, h.process, h.net_namespace,
           string_agg(DISTINCT h.query, ', ' ORDER BY h.query) AS query,
           array_to_string(list_sort(list_distinct(flatten(list(h.answers)))), ', ')
               AS address,
           NULL::INTEGER AS port, NULL::VARCHAR AS state, count(*) AS times,
           min(h.ts) AS first_seen, max(h.ts) AS last_seen
    FROM hits h
    GROUP BY ALL
),
held AS (  -- each socket connected to an answer of its own namespace, once
    SELECT s.pid, s.net_namespace, s.protocol, s.local_address, s.local_port,
           s.remote_address, s.remote_port, s.state, s.inode, s.first_seen,
           string_agg(DISTINCT a.query, ', ' ORDER BY a.query) AS query
    FROM sockets s
    JOIN answers a ON a.address = CASE WHEN s.remote_address LIKE '::ffff:%'
                                       THEN substr(s.remote_address, 8)
                                       ELSE s.remote_address END
                  AND coalesce(a.net_namespace = s.net_namespace, true)
    GROUP BY ALL
),
connected AS (
    SELECT 'connected' AS relation, h.pid, p.name AS process, h.net_namespace, h.query,
           h.remote_address AS address, h.remote_port AS port, h.state,
           count(*) AS times, min(h.first_seen) AS first_seen,
           now() AT TIME ZONE 'UTC' AS last_seen
    FROM held h
    LEFT JOIN processes p ON p.pid = h.pid
    GROUP BY ALL
)
SELECT r.relation, r.pid, r.process, p.username, r.query, r.address, r.port, r.state,
       r.times, r.first_seen, r.last_seen,
       date_trunc('second', (now() AT TIME ZONE 'UTC') - r.last_seen) AS ago,
       r.net_namespace, coalesce(p.container_name, p.container_id) AS container,
       p.start_time AS process_started, p.cmdline
FROM (SELECT * FROM asked UNION ALL SELECT * FROM connected) r
LEFT JOIN processes p ON p.pid = r.pid
ORDER BY CASE r.relation WHEN 'asked' THEN 1 WHEN 'forwarded' THEN 2 ELSE 3 END,
         r.last_seen DESC, r.pid, r.net_namespace;
