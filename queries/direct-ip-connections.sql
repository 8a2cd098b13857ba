-- name: direct-ip-connections
-- description: Established connections to addresses that no captured DNS answer gave:
--   programs that connect to a hard-coded IP address, as much malware does.
-- param: exclude_private bool = false Leave out private, link-local and unique-local
--   addresses (10/8, 172.16/12, 192.168/16, 169.254/16, fc00::/7, fe80::/10).
-- param: ports int[] = '53' Remote ports to leave out (DNS servers are reached by address).
-- example: netsql --capture 120 -q direct-ip-connections
-- example: netsql --capture 120 -q direct-ip-connections -p exclude_private=true
--
-- Meaningful only with DNS captured for a while (--capture SECONDS, or the shell):
-- without DNS every connection is listed, since none has a remote_host. An answer
-- counts in its own network namespace only: a connection in one container to an
-- address another container looked up is listed (net_namespace and container, the
-- runtime's name for it else its id, say where it runs). A connection
-- opened before the capture started, to an address resolved before it, is listed too:
-- capture longer, or look at the process. Loopback is always left out.
SELECT s.pid, p.name AS process, p.username, s.protocol, s.remote_address,
       s.remote_port, s.local_address, s.local_port, s.net_namespace,
       coalesce(p.container_name, p.container_id) AS container, p.start_time AS process_started, p.cmdline
FROM sockets s
LEFT JOIN processes p ON p.pid = s.pid
WHERE s.state = 'ESTABLISHED'
  AND s.remote_host IS NULL
  AND NOT regexp_matches(s.remote_address, '^(127\.|::1$|::ffff:127\.)')
  AND NOT list_contains($ports, s.remote_port)
  AND NOT ($exclude_private AND regexp_matches(s.remote_address,
      '^(::ffff:)?(10\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|169\.254\.)|^f[cd][0-9a-f]{2}:|^fe[89ab][0-9a-f]:'))
ORDER BY p.name, s.pid, s.remote_address, s.remote_port;
