-- name: connections
-- description: Established connections by process: which process talks to which remote
--   address, host name and port, in what state.
-- param: process text = null Only processes whose name matches (LIKE: % and _ are
--   wildcards), e.g. curl or python%.
-- param: pid int = null Only this process.
-- param: port int = null Only connections to this remote port.
-- param: all_states bool = false Every connected socket (SYN_SENT, CLOSE_WAIT,
--   TIME_WAIT, ...), not only ESTABLISHED ones.
-- example: netsql -q connections
-- example: netsql --capture 20 -q connections -p port=443
--
-- remote_host is the name a captured DNS answer gave for the remote address in the
-- socket's own network namespace: it is filled in with --capture or --pcap, or in the
-- shell; NULL otherwise. Sockets of every network namespace are shown: net_namespace
-- and container (the runtime's name for it, else its id; NULL on the host) tell them
-- apart. Connected UDP sockets count as ESTABLISHED.
SELECT s.pid, p.name AS process, p.username, s.protocol, s.local_address, s.local_port,
       s.remote_address, s.remote_port, s.remote_host, s.state, s.net_namespace,
       coalesce(p.container_name, p.container_id) AS container, p.cmdline
FROM sockets s
LEFT JOIN processes p ON p.pid = s.pid
WHERE s.remote_address IS NOT NULL
  AND (s.state = 'ESTABLISHED' OR $all_states)
  AND ($process IS NULL OR p.name LIKE $process)
  AND ($pid IS NULL OR s.pid = $pid)
  AND ($port IS NULL OR s.remote_port = $port)
ORDER BY p.name, s.pid, s.remote_address, s.remote_port;
