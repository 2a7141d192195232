"""Quotas: how much a person may use at once, by role and by proposal.

Pure values and functions. A :class:`Quota` caps the sum over a user's live
sessions (named servers) of: sessions, CPUs, memory, GPUs and requested hours.
The role quota applies to everything the user runs; a proposal quota, where the
site sets one, also caps the user's sessions on that proposal.

:class:`QuotaTable` is the site's quota settings, checked and parsed once;
:func:`ledger` is what a person's live sessions use and what is left.
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
                if isinstance(raw, bool):
                    raise TypeError(raw)
                value = parse_memory(raw) if name == "memory" else (int(raw) if name in ("sessions", "gpu") else float(raw))
            except (TypeError, ValueError):
                raise ValueError(f"{where}.{name} = {raw!r} is not a number{' or size such as 64G' if name == 'memory' else ''}") from None
            if value < 0:
                raise ValueError(f"{where}.{name} must not be negative")
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


@dataclass(frozen=True)
class QuotaTable:
    """The site's quotas, checked once: a full quota per role, and per proposal the keys it sets."""

    roles: dict  # role -> Quota (built-in values for keys the site left out)
    proposals: dict  # proposal id -> {key: parsed value}

    def for_roles(self, roles: Iterable[str]) -> Quota:
        return self.roles[quota_role(roles)]

    def proposal_quotas(self, roles: Iterable[str]) -> dict:
        """Per proposal, its quota for a person with ``roles`` (keys it leaves out: their role quota)."""
        base = self.for_roles(roles)
        return {pid: Quota(**{name: values.get(name, getattr(base, name)) for name in _FIELDS})
                for pid, values in self.proposals.items()}


def _check_keys(d, where: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping of {', '.join(_FIELDS)}, got {d!r}")
    for key in d:
        if key not in _FIELDS:
            raise ValueError(f"{where}.{key}: unknown key; use {', '.join(_FIELDS)}")


def check_role_quotas(written: dict, *, where: str = "DaasSpawner.role_quotas") -> dict:
    """``{role: {key: value}}`` -> ``{role: Quota}`` for every role; ValueError naming ``where.role.key``."""
    for role in written:
        if role not in QUOTA_ROLES:
            raise ValueError(f"{where}.{role}: unknown role; roles: {', '.join(QUOTA_ROLES)}")
    out = {}
    for role in QUOTA_ROLES:
        fallback = Quota.from_dict(DEFAULT_ROLE_QUOTAS[role], where=f"built-in quota {role}")
        d = written.get(role, {})
        _check_keys(d, f"{where}.{role}")
        out[role] = Quota.from_dict(d, fallback=fallback, where=f"{where}.{role}")
    return out


def check_proposal_quotas(written: dict, *, where: str = "DaasSpawner.proposal_quotas") -> dict:
    """``{proposal: {key: value}}`` -> ``{proposal: {key: parsed}}``; ValueError naming ``where.proposal.key``."""
    zero = Quota(0, 0, 0, 0, 0)
    out = {}
    for pid, d in written.items():
        _check_keys(d, f"{where}.{pid}")
        parsed = Quota.from_dict(d, fallback=zero, where=f"{where}.{pid}")
        out[str(pid)] = {name: getattr(parsed, name) for name in d}
    return out


def quota_table(role_quotas: dict, proposal_quotas: dict) -> QuotaTable:
    return QuotaTable(check_role_quotas(role_quotas), check_proposal_quotas(proposal_quotas))


@dataclass(frozen=True)
class Ledger:
    """What a person's live sessions use against their quota, and what is left."""

    quota: Quota
    used: Usage
    left: Usage


def ledger(quota: Quota, sessions: Iterable) -> Ledger:
    """The ledger of ``sessions`` (requests: cpu, memory, gpu, hours) against ``quota``."""
    used = total(sessions)
    return Ledger(quota, used, available(quota, used))
