-- name: unusual-processes
-- description: Processes holding sockets whose executable is deleted, lives in a
--   temporary or in-memory place (/tmp, /dev/shm, memfd), whose name does not match
--   their executable, or that pose as a kernel thread.
-- param: dirs text[] = '/tmp/,/var/tmp/,/dev/shm/,/run/shm/' Directories no network
--   program should run from (prefixes of the executable's path).
-- example: sudo netsql -q unusual-processes
--
-- reasons lists what matched: 'executable deleted' (also after a package upgrade
-- replaced a running daemon's binary: check the path), 'runs from /tmp/' (or another
-- of dirs), 'runs from memory (memfd)' (fileless), 'name does not match executable'
-- (the process renamed itself: its name is neither a prefix of the executable's file
-- name nor in its command line), 'looks like a kernel thread' (a command line that
-- starts with a bracket, like [kworker/0:1], but an executable on disk: kernel threads
-- have neither a command line nor an executable). Needs root to see other
-- users' processes. Only processes that hold a socket now are checked. net_namespace
-- and container (the runtime's name for it, else its id; NULL on the host) say where
-- each runs.
WITH net AS (
    SELECT o.pid, count(*) AS sockets,
           list(DISTINCT o.endpoint ORDER BY o.endpoint)[1:3] AS endpoints
    FROM (SELECT unnest(coalesce(owners, [pid])) AS pid,
                 protocol || ' ' || CASE WHEN remote_address IS NULL
                     THEN 'on ' || local_address || ':' || local_port
                     ELSE 'to ' || remote_address || ':' || remote_port END AS endpoint
          FROM sockets WHERE pid IS NOT NULL) o
    GROUP BY o.pid
),
checked AS (
    SELECT p.*, n.sockets, n.endpoints,
           regexp_extract(p.path, '[^/]*$') AS file_name,
           (SELECT min(d) FROM unnest($dirs) t(d) WHERE starts_with(p.path, d)) AS bad_dir
    FROM processes p JOIN net n ON n.pid = p.pid
)
SELECT pid, name, path,
       concat_ws(', ',
           CASE WHEN exe_deleted THEN 'executable deleted' END,
           CASE WHEN bad_dir IS NOT NULL THEN 'runs from ' || bad_dir END,
           CASE WHEN starts_with(path, '/memfd:') THEN 'runs from memory (memfd)' END,
           CASE WHEN path IS NOT NULL AND NOT starts_with(file_name, name)
                     AND NOT starts_with(name, file_name) AND NOT contains(cmdline, name)
                THEN 'name does not match executable' END,
           CASE WHEN path IS NOT NULL AND starts_with(cmdline, '[')
                THEN 'looks like a kernel thread' END) AS reasons,
       username, start_time AS started, sockets, endpoints, net_namespace,
       coalesce(container_name, container_id) AS container, cmdline
FROM checked
WHERE reasons <> ''
ORDER BY pid;
