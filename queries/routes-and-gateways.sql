-- name: routes-and-gateways
-- description: Default routes and every route through a gateway (a next-hop router),
--   with the outgoing interface's state, in every network namespace.
-- param: family text = null Only 'ipv4' or 'ipv6'.
-- param: netns int = null Only this network namespace (its inode, as in
--   net_namespaces.net_namespace).
-- example: netsql -q routes-and-gateways
-- example: netsql -q routes-and-gateways -p netns=4026531840
--
-- A new default route, or a route for one network through an unexpected gateway, is
-- how traffic gets diverted. is_default marks default routes; preferred marks the one
-- of each namespace, family and table that wins (lowest metric). Routes come from every
-- network namespace (net_namespace and its `ip netns` name tell them apart); the local
-- table (the namespace's own addresses) is left out.
WITH r AS (
    SELECT *, destination IN ('0.0.0.0/0', '::/0') AS is_default FROM routes
    WHERE "table" <> 'local' AND ($family IS NULL OR family = lower($family))
      AND ($netns IS NULL OR net_namespace = $netns)
)
SELECT r.family, r.destination, r.is_default,
       r.is_default AND row_number() OVER (
           PARTITION BY r.net_namespace, r.family, r."table", r.is_default
           ORDER BY r.metric NULLS FIRST, r.gateway) = 1 AS preferred,
       r.gateway, r.interface, i.oper_state AS interface_state, r.metric, r.protocol,
       r.type, r."table", r.net_namespace, n.name AS netns_name
FROM r
LEFT JOIN interfaces i ON i.net_namespace = r.net_namespace AND i.name = r.interface
LEFT JOIN net_namespaces n ON n.net_namespace = r.net_namespace
WHERE r.is_default OR r.gateway IS NOT NULL
ORDER BY r.net_namespace, r.is_default DESC, r.family, r."table", r.metric NULLS FIRST, r.destination;
