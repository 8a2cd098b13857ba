-- name: process-network
-- description: Everything one process does on the network: the process and its parent,
--   its listening and connected sockets, and the DNS names it asked for.
-- param: pid int (required) The process id.
-- example: sudo netsql -q process-network -p pid=1234
-- example: sudo netsql --capture 30 -q process-network -p pid=1234
--
-- Two tables: the process (with its parent, its network namespace and its container:
-- the runtime's name for it, else its id; NULL on the host), then one row per socket
-- ('listening' or 'connected', with the name DNS answered for its remote address in
-- the socket's own network namespace, when DNS was captured) and per name it looked
-- up ('dns', with the answers, how often and how long ago). The DNS rows need
-- --capture or the shell; without them only sockets are shown (and a warning says DNS
-- is empty).
SELECT p.pid, p.name, p.path, p.exe_deleted, p.username, p.start_time AS started,
       p.cwd, p.ppid, parent.name AS parent_name, parent.cmdline AS parent_cmdline,
       p.net_namespace, coalesce(p.container_name, p.container_id) AS container,
       p.cmdline
FROM processes p LEFT JOIN processes parent ON parent.pid = p.ppid
WHERE p.pid = $pid;

SELECT CASE WHEN s.remote_address IS NULL OR s.state = 'LISTEN' THEN 'listening'
            ELSE 'connected' END AS kind,
       s.protocol, s.local_address || ':' || s.local_port AS local,
       s.remote_address || ':' || s.remote_port AS remote, s.remote_host AS name,
       s.state, NULL::VARCHAR AS answers, 1::BIGINT AS times,
       NULL::TIMESTAMP AS last_seen, NULL::INTERVAL AS ago
FROM sockets s
WHERE list_contains(s.owners, $pid::INTEGER)
UNION ALL
SELECT 'dns', any_value(transport), NULL, any_value(server_address) || ':'
           || any_value(server_port), query, string_agg(DISTINCT rcode, ', '),
       nullif(array_to_string(list_sort(list_distinct(flatten(list(answers)))), ', '), ''),
       count(*),
       max(ts), date_trunc('second', (now() AT TIME ZONE 'UTC') - max(ts))
FROM dns_queries
WHERE pid = $pid
GROUP BY query
ORDER BY kind DESC, local, remote, name;
