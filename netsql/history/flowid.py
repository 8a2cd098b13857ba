"""The Community ID flow hash (v1), so recorded connections join Zeek's conn.log and
Suricata's eve.json on ``community_id``. Computed by the reference implementation
(the ``communityid`` package), once per connection life."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _calculator() -> Any:
    import communityid

    return communityid.CommunityID()


def community_id(protocol: str, local: str, lport: int, remote: str, rport: int) -> str | None:
    """'1:...' for a TCP or UDP connection; None for anything it cannot hash."""
    import communityid

    make = {"tcp": communityid.FlowTuple.make_tcp,
            "udp": communityid.FlowTuple.make_udp}.get(protocol)
    if make is None:
        return None
    try:
        return str(_calculator().calc(make(local, remote, lport, rport)))
    except (ValueError, communityid.Error):
        return None
