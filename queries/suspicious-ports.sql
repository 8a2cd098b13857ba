-- name: suspicious-ports
-- description: Connections to, and listeners on, ports that backdoors, remote-access
--   tools, IRC bots and Tor use.
-- param: ports int[] = '23,1080,1337,2323,3389,4444,4445,5554,5555,5900,5901,6660,6661,6662,6663,6664,6665,6666,6667,6668,6669,7777,8888,9001,9030,9050,9051,9150,12345,31337,50050' The ports to look for.
-- example: sudo netsql -q suspicious-ports
-- example: sudo netsql -q suspicious-ports -p ports=4444,31337
--
-- Defaults: telnet (23, 2323), SOCKS (1080), RDP (3389) and VNC (5900, 5901),
-- Metasploit's and other shells' favourites (4444, 4445, 1337, 31337, 12345, 7777,
-- 8888), ADB (5555, 5554), IRC (6660-6669), Tor (9001, 9030, 9050, 9051, 9150),
-- Cobalt Strike's team server (50050). kind: 'listening' (the port is local) or
-- 'connected' (to a remote port on the list, or from one: an inbound connection).
-- net_namespace and container (the runtime's name for it, else its id; NULL on the
-- host) say where the socket is.
SELECT CASE WHEN s.state = 'LISTEN' OR s.remote_address IS NULL THEN 'listening'
            ELSE 'connected' END AS kind,
       s.protocol, s.local_address, s.local_port, s.remote_address, s.remote_port,
       s.remote_host, s.state, s.pid, p.name AS process, p.username, s.net_namespace,
       coalesce(p.container_name, p.container_id) AS container, p.cmdline
FROM sockets s
LEFT JOIN processes p ON p.pid = s.pid
WHERE (list_contains($ports, s.local_port)
       AND (s.state IN ('LISTEN', 'ESTABLISHED') OR s.remote_address IS NULL))
   OR (list_contains($ports, s.remote_port) AND s.remote_address IS NOT NULL)
ORDER BY kind DESC, s.local_port, s.remote_port, s.pid;
