-- name: dns-tunneling
-- description: Domains asked for with many different, long subdomain names or many TXT
--   queries: the shape of data smuggled out (or commands smuggled in) through DNS.
-- param: min_names int = 20 Only domains with at least this many distinct names under
--   them ...
-- param: min_length int = 60 ... or a name at least this long (characters).
-- example: netsql --capture 300 -q dns-tunneling
-- example: netsql --pcap dns.pcap -q dns-tunneling -p min_names=50
--
-- Grouped by the last two labels of the name (so 'co.uk' domains group together).
-- longest_label over about 40 characters, many TXT or NULL queries, and names that
-- each appear once are the usual signs. Forwarders' upstream queries are left out
-- (the application's own query is counted).
SELECT array_to_string(list_slice(string_split(query, '.'), -2, -1), '.') AS domain,
       count(DISTINCT query) AS names, count(*) AS queries,
       max(length(query)) AS longest_name, round(avg(length(query)), 1) AS average_length,
       max(label_length) AS longest_label,
       count(*) FILTER (WHERE qtype IN ('TXT', 'NULL', 'ANY')) AS txt_null_any,
       count(*) FILTER (WHERE rcode = 'NXDOMAIN') AS nxdomain,
       string_agg(DISTINCT coalesce(process, client_address), ', ') AS processes,
       list(DISTINCT pid) FILTER (WHERE pid IS NOT NULL) AS pids,
       list(DISTINCT net_namespace) FILTER (WHERE net_namespace IS NOT NULL)
           AS net_namespaces,
       min(ts) AS first_seen, max(ts) AS last_seen
FROM (SELECT *, (SELECT max(length(label)) FROM unnest(string_split(query, '.')) t(label))
          AS label_length
      FROM dns_queries
      WHERE query IS NOT NULL AND (forwarder IS NULL OR NOT forwarder))
GROUP BY domain
HAVING count(DISTINCT query) >= $min_names OR max(length(query)) >= $min_length
ORDER BY names DESC, longest_name DESC, domain;
