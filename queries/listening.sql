-- name: listening
-- description: What listens where, by which process and user; binds to every address of
--   the host (wildcard) first.
-- param: wildcard_only bool = false Only sockets bound to every address (0.0.0.0 or ::).
-- param: protocol text = null Only 'tcp' or 'udp'.
-- example: netsql -q listening
-- example: netsql -q listening -p wildcard_only=true -p protocol=tcp
--
-- exposure: 'every address' (a wildcard bind: reachable on each interface, unless a
-- firewall says otherwise), 'loopback' (this host only), 'one address'. UDP rows are
-- unconnected UDP sockets: servers, and also clients (a resolver's ephemeral port)
-- that receive datagrams from anyone. Every network namespace is shown (net_namespace;
-- container: the runtime's name for it, else its id, NULL on the host).
SELECT l.protocol, l.family, l.address, l.port,
       CASE WHEN l.wildcard THEN 'every address'
            WHEN l.address LIKE '127.%' OR l.address = '::1' THEN 'loopback'
            ELSE 'one address' END AS exposure,
       l.wildcard, l.pid, p.name AS process, p.username, p.path, l.owners,
       l.net_namespace, coalesce(p.container_name, p.container_id) AS container
FROM listening_ports l
LEFT JOIN processes p ON p.pid = l.pid
WHERE (l.wildcard OR NOT $wildcard_only)
  AND ($protocol IS NULL OR l.protocol = lower($protocol))
ORDER BY l.wildcard DESC, l.protocol, l.port, l.address;
