"""Session lifetimes: the deadline the form's ``hours`` sets, the notice before it, extensions.

Pure values and functions; the clock is always passed in (epoch seconds). The
hub side (:mod:`daas_hub.spawners.operations`) keeps ``started`` in the server's
state and the hours in the checked request, and stops the session once
:meth:`Lifetime.phase` says ``over``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .quotas import Quota, Usage, available, format_amount


class Phase(enum.Enum):
    RUNNING = "running"
    WARNING = "warning"  # the notice is shown: the session stops soon
    OVER = "over"  # past the deadline: the hub stops it


@dataclass(frozen=True)
class Lifetime:
    """A session's lifetime: started at ``started`` (epoch s), allowed ``hours`` in all."""

    started: float
    hours: float

    @property
    def deadline(self) -> float:
        return self.started + self.hours * 3600

    def left(self, now: float) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.deadline - now)

    def phase(self, now: float, warn_before: float) -> Phase:
        left = self.deadline - now
        if left <= 0:
            return Phase.OVER
        if left <= warn_before:
            return Phase.WARNING
        return Phase.RUNNING

    def extended(self, extra_hours: float) -> Lifetime:
        return Lifetime(self.started, self.hours + extra_hours)


def format_left(seconds: float) -> str:
    """``3 h 05 min``, ``12 min``, ``40 s``: what the home page and JupyterLab show."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min"
    return f"{s} s"


def extension_refusal(quota: Quota, used: Usage, extra_hours: float, *, max_extension: float) -> str | None:
    """Why ``extra_hours`` more cannot be granted to a session (None: it can).

    ``used`` is what the person's live sessions hold now (their requested hours
    included); the quota's ``hours`` caps that sum, as at the start.
    """
    if not extra_hours > 0:
        return "Choose a positive number of hours to extend by."
    if extra_hours > max_extension:
        return f"One extension adds at most {format_amount('hours', max_extension)}; ask again later for more."
    left = available(quota, used).hours
    if extra_hours > left + 1e-9:
        return (f"Not extended: your sessions already hold {format_amount('hours', used.hours)} of your "
                f"{format_amount('hours', quota.hours)} quota, so {format_amount('hours', left)} can be added. "
                f"Stop another session or choose fewer hours.")
    return None
