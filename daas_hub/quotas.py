"""Quotas: how much a person may use at once, by role and by proposal.

Pure values and functions. A :class:`Quota` caps the sum over a user's live
sessions (named servers) of: sessions, CPUs, memory, GPUs and requested hours.
The role quota applies to everything the user runs; a proposal quota, where the
site sets one, also caps the user's sessions on that proposal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .access import STAFF_ROLES, TRAINING_ROLES
from .profiles import parse_memory

GIB = 1024**3

#: quota roles, most generous first: a person gets the first one their account has
QUOTA_ROLES = ("staff", "instructor", "training", "user")


@dataclass(frozen=True)
class Quota:
    sessions: int
    cpu: float
    memory: int  # bytes
    gpu: int
    hours: float

    @classmethod
    def from_dict(cls, d: dict, *, fallback: Quota | None = None, where: str = "quota") -> Quota:
        """``{"sessions": 2, "cpu": 16, "memory": "64G", "gpu": 1, "hours": 24}``; missing keys
        come from ``fallback``. Raises ValueError naming ``where`` and the key."""
        unknown = set(d) - set(_FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(_FIELDS)}")
        values = {}
        for name in _FIELDS:
            if name not in d:
                if fallback is None:
                    raise ValueError(f"{where}: {name} is missing")
                values[name] = getattr(fallback, name)
                continue
            raw = d[name]
            try:
                value = parse_memory(raw) if name == "memory" else (int(raw) if name in ("sessions", "gpu") else float(raw))
            except (TypeError, ValueError):
                raise ValueError(f"{where}: {name} = {raw!r} is not a number{' or size such as 64G' if name == 'memory' else ''}") from None
            if value < 0:
                raise ValueError(f"{where}: {name} must not be negative")
            values[name] = value
        return cls(**values)


_FIELDS = ("sessions", "cpu", "memory", "gpu", "hours")

DEFAULT_ROLE_QUOTAS = {
    "user": {"sessions": 2, "cpu": 16, "memory": "64G", "gpu": 1, "hours": 24},
    "staff": {"sessions": 4, "cpu": 64, "memory": "256G", "gpu": 4, "hours": 96},
    "instructor": {"sessions": 3, "cpu": 16, "memory": "64G", "gpu": 1, "hours": 48},
    "training": {"sessions": 1, "cpu": 4, "memory": "8G", "gpu": 0, "hours": 8},
}


@dataclass(frozen=True)
class Usage:
    sessions: int = 0
    cpu: float = 0
    memory: int = 0
    gpu: int = 0
    hours: float = 0

    def plus(self, cpu: float, memory: int, gpu: int, hours: float) -> Usage:
        return Usage(self.sessions + 1, self.cpu + cpu, self.memory + memory, self.gpu + gpu, self.hours + hours)


def quota_role(roles: Iterable[str]) -> str:
    roles = set(roles)
    if roles & STAFF_ROLES:
        return "staff"
    if "instructor" in roles:
        return "instructor"
    if roles & (TRAINING_ROLES - {"instructor"}):
        return "training"
    return "user"


def total(sessions: Iterable) -> Usage:
    """The usage of ``sessions`` (anything with cpu, memory, gpu, hours)."""
    u = Usage()
    for s in sessions:
        u = u.plus(s.cpu, s.memory, s.gpu, s.hours)
    return u


def available(quota: Quota, used: Usage) -> Usage:
    """What is left (never negative)."""
    return Usage(
        sessions=max(0, quota.sessions - used.sessions),
        cpu=max(0.0, quota.cpu - used.cpu),
        memory=max(0, quota.memory - used.memory),
        gpu=max(0, quota.gpu - used.gpu),
        hours=max(0.0, quota.hours - used.hours),
    )


def format_amount(name: str, value: float) -> str:
    if name == "memory":
        return f"{value / GIB:g} GiB"
    if name == "hours":
        return f"{value:g} h"
    if name == "cpu":
        return f"{value:g} CPU"
    if name == "gpu":
        return f"{value:g} GPU"
    return f"{value:g}"
