"""What the benchmarks share to print their figures (imported from the scripts' own folder)."""

from __future__ import annotations

import os


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes), as the benchmarks print them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
