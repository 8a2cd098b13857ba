-- name: routes-and-gateways
-- description: Default routes and every route through a gateway (a next-hop router),
--   with the outgoing interface's state, in this network namespace.
-- param: family text = null Only 'ipv4' or 'ipv6'.
-- example: netsql -q routes-and-gateways
-- example: sudo ip netns exec NAME netsql -q routes-and-gateways
--
-- A new default route, or a route for one network through an unexpected gateway, is
-- how traffic gets diverted. is_default marks default routes; preferred marks the one
-- of each family and table that wins (lowest metric). Routes come from the namespace
-- netsql runs in (net_namespace): run it under `ip netns exec NAME` for another
-- namespace; the local table (this host's own addresses) is left out.
WITH r AS (
    SELECT *, destination IN ('0.0.0.0/0', '::/0') AS is_default FROM routes
    WHERE "table" <> 'local' AND ($family IS NULL OR family = lower($family))
)
SELECT r.family, r.destination, r.is_default,
       r.is_default AND row_number() OVER (
           PARTITION BY r.family, r."table", r.is_default
           ORDER BY r.metric NULLS FIRST, r.gateway) = 1 AS preferred,
       r.gateway, r.interface, i.oper_state AS interface_state, r.metric, r.protocol,
       r.type, r."table", r.net_namespace
FROM r LEFT JOIN interfaces i ON i.name = r.interface
WHERE r.is_default OR r.gateway IS NOT NULL
ORDER BY r.is_default DESC, r.family, r."table", r.metric NULLS FIRST, r.destination;
