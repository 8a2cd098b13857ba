-- name: dns-top
-- description: dnstop's tables as SQL: DNS queries counted by source, by server, by query
--   type, by response code, and by name at the first three label levels.
-- param: limit int = 10 Rows per table.
-- param: since interval = null Only queries seen within this long (e.g. 15m, 2h); all
--   captured queries when not given.
-- example: netsql --capture 60 -q dns-top
-- example: netsql --pcap dns.pcap -q dns-top -p limit=20 --format markdown
--
-- Seven result sets, one per dnstop table, each with its share of all queries
-- (percent): sources (per network namespace, since two containers may use one
-- address; with the processes that asked, live), servers, qtype, rcode
-- (NULL: not answered), tld ('com'), second_level ('boldchat.com'), third_level
-- ('vmp.boldchat.com'). The label levels are plain label counts: 'co.uk' counts as a
-- second level name.
WITH q AS (
    SELECT * FROM dns_queries
    WHERE $since IS NULL OR ts >= (now() AT TIME ZONE 'UTC') - $since
)
SELECT client_address AS source, net_namespace,
       string_agg(DISTINCT process, ', ' ORDER BY process) AS processes,
       count(*) AS queries, round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent
FROM q GROUP BY client_address, net_namespace
ORDER BY queries DESC, source, net_namespace LIMIT $limit;

WITH q AS (
    SELECT * FROM dns_queries
    WHERE $since IS NULL OR ts >= (now() AT TIME ZONE 'UTC') - $since
)
SELECT server_address AS server, count(*) AS queries,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent
FROM q GROUP BY server_address ORDER BY queries DESC, server LIMIT $limit;

WITH q AS (
    SELECT * FROM dns_queries
    WHERE $since IS NULL OR ts >= (now() AT TIME ZONE 'UTC') - $since
)
SELECT qtype, count(*) AS queries,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent
FROM q GROUP BY qtype ORDER BY queries DESC, qtype LIMIT $limit;

WITH q AS (
    SELECT * FROM dns_queries
    WHERE $since IS NULL OR ts >= (now() AT TIME ZONE 'UTC') - $since
)
SELECT rcode, count(*) AS queries,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent
FROM q GROUP BY rcode ORDER BY queries DESC, rcode NULLS LAST LIMIT $limit;

WITH q AS (
    SELECT * FROM dns_queries
    WHERE $since IS NULL OR ts >= (now() AT TIME ZONE 'UTC') - $since
)
SELECT array_to_string(list_slice(string_split(query, '.'), -1, -1), '.') AS tld,
       count(*) AS queries, round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent
FROM q WHERE query IS NOT NULL GROUP BY tld ORDER BY queries DESC, tld LIMIT $limit;

WITH q AS (
    SELECT * FROM dns_queries
    WHERE $since IS NULL OR ts >= (now() AT TIME ZONE 'UTC') - $since
)
SELECT array_to_string(list_slice(string_split(query, '.'), -2, -1), '.') AS second_level,
       count(*) AS queries, round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent
FROM q WHERE query IS NOT NULL GROUP BY second_level
ORDER BY queries DESC, second_level LIMIT $limit;

WITH q AS (
    SELECT * FROM dns_queries
    WHERE $since IS NULL OR ts >= (now() AT TIME ZONE 'UTC') - $since
)
SELECT array_to_string(list_slice(string_split(query, '.'), -3, -1), '.') AS third_level,
       count(*) AS queries, round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent
FROM q WHERE query IS NOT NULL GROUP BY third_level
ORDER BY queries DESC, third_level LIMIT $limit;
