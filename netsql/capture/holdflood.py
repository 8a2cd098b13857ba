"""The hold helper's flood pause (holder.py): when the held packets of a second are a
flood (more than hold.FLOOD_PER_SECOND) or too many wait in the queue, the helper stops
naming senders for hold.FLOOD_PAUSE seconds and lets every packet go at once; the
pauses and the time paused, for its stats.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from netsql.capture.hold import FLOOD_PAUSE, FLOOD_PER_SECOND


class FloodPause:
    """``backlog()``: the packets waiting now; more than ``max_backlog``: a flood."""

    def __init__(self, backlog: Callable[[], int], max_backlog: int) -> None:
        self.backlog = backlog
        self.max_backlog = max_backlog
        self.pauses = 0
        self.paused_seconds = 0.0  # of the pauses ended
        self.paused_until = 0.0  # the end of the pause under way (0: none)

    def tick(self) -> float:
        """The time now; ends the pause under way when its time has come."""
        now = time.monotonic()
        if self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
            self.paused_seconds += FLOOD_PAUSE
        return now

    def check(self, count: int, now: float, every: int = 32) -> bool:
        """Pause the lookups when ``count`` held packets this second are a flood, or
        (looked at every ``every`` packets) too many wait."""
        if not self.paused_until and (count > FLOOD_PER_SECOND or (
                count % every == 0 and self.backlog() > self.max_backlog)):
            self.paused_until = now + FLOOD_PAUSE
            self.pauses += 1
            return True
        return False

    def seconds(self) -> float:
        """The time paused so far, the pause under way included."""
        paused = self.paused_seconds
        if self.paused_until:
            paused += FLOOD_PAUSE - max(self.paused_until - time.monotonic(), 0.0)
        return paused
