"""The spawn options: what a person may ask for, checked against everything.

``user_options`` arrive from the spawn form, a permalink or the REST API, and are
untrusted. :func:`validate_options` turns them into a :class:`SessionRequest`
(a frozen value with exactly the allowed fields) or raises :class:`OptionError`
naming the option and the allowed range. Backends only ever see the request,
never the raw options. Pure: no JupyterHub imports, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .access import STAFF_ROLES, TRAINING_ROLES
from .model import Account, Proposal, ProposalState
from .profiles import Profile, ProfileCatalogue
from .quotas import GIB, Quota, Usage, available, format_amount, total

#: every option the form sends; anything else is refused
OPTION_NAMES = ("proposal", "profile", "backend", "cpu", "memory", "gpu", "hours")
#: the form's value for "no proposal" (staff and training only)
NO_PROPOSAL = "none"
MAX_TEXT = 64
#: integers beyond this are refused before any float conversion (2**53: exact in a float)
MAX_EXACT = 2**53


class OptionError(ValueError):
    """An option that cannot be used; the message says which and what is allowed."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(f"{option}: {message}")


@dataclass(frozen=True)
class SessionRequest:
    """One checked session request; ``memory`` in bytes, ``hours`` the wall time."""

    proposal: str | None
    profile: str
    backend: str
    cpu: int
    memory: int
    gpu: int
    hours: float

    def to_options(self) -> dict:
        """The canonical ``user_options`` (memory in GiB), valid input for validate_options."""
        d = asdict(self)
        d["proposal"] = self.proposal or NO_PROPOSAL
        d["memory"] = self.memory / GIB
        return d

    @classmethod
    def from_options(cls, opts: dict) -> SessionRequest:
        """The request back from its stored canonical options (:meth:`to_options`).

        For requests the hub checked and saved itself (a server's state); raises
        :class:`ValueError` when the stored value is not such a request.
        """
        if not isinstance(opts, dict):
            raise ValueError(f"expected the stored options as a mapping, got {type(opts).__name__}")
        missing = [name for name in OPTION_NAMES if name not in opts]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        try:
            return cls(
                proposal=None if opts["proposal"] == NO_PROPOSAL else str(opts["proposal"]),
                profile=str(opts["profile"]), backend=str(opts["backend"]),
                cpu=int(opts["cpu"]), memory=int(float(opts["memory"]) * GIB), gpu=int(opts["gpu"]),
                hours=float(opts["hours"]),
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"unreadable value ({e})") from None

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.proposal, self.profile)


@dataclass(frozen=True)
class SpawnContext:
    """What validation needs to know about the person and the site."""

    account: Account
    proposals: tuple[Proposal, ...]
    catalogue: ProfileCatalogue
    backends: tuple[str, ...]  # enabled backends, preferred first
    quota: Quota
    proposal_quotas: dict = field(default_factory=dict)  # proposal id -> Quota
    others: tuple[SessionRequest, ...] = ()  # the user's other live sessions
    staff_without_proposal: bool = True

    @property
    def no_proposal_allowed(self) -> bool:
        roles = self.account.roles
        return bool((self.staff_without_proposal and roles & STAFF_ROLES) or roles & TRAINING_ROLES)

    def selectable_proposals(self) -> list[Proposal]:
        """The user's proposals that can back a session (archived ones cannot)."""
        seen, out = set(), []
        for p in self.proposals:
            if p.id in seen or p.role_of(self.account.username) is None or p.state is ProposalState.ARCHIVED:
                continue
            seen.add(p.id)
            out.append(p)
        return out

    def proposal(self, pid: str | None) -> Proposal | None:
        for p in self.selectable_proposals():
            if p.id == pid:
                return p
        return None

    def profiles_for(self, pid: str | None) -> list[Profile]:
        p = self.proposal(pid)
        instrument = p.instrument if p else None
        return [pr for pr in self.catalogue.profiles
                if pr.suits(instrument) and any(b in self.backends for b in pr.backends)]

    def backends_for(self, profile: Profile) -> list[str]:
        return [b for b in self.backends if b in profile.backends]

    def used(self) -> Usage:
        return total(self.others)

    def defaults(self) -> dict:
        """Sensible choices for a one-click start: first proposal, its first profile."""
        props = self.selectable_proposals()
        pid = props[0].id if props else (None if self.no_proposal_allowed else "")
        profiles = self.profiles_for(pid)
        taken = {o.key for o in self.others}
        profile = next((p for p in profiles if (pid, p.slug) not in taken), profiles[0] if profiles else None)
        if profile is None:
            return {"proposal": pid or NO_PROPOSAL}
        return {
            "proposal": pid or NO_PROPOSAL,
            "profile": profile.slug,
            "backend": self.backends_for(profile)[0],
            "cpu": int(profile.default.cpu),
            "memory": profile.default.memory / GIB,
            "gpu": profile.default.gpu,
            "hours": profile.default.hours,
        }


def _single(name: str, value):
    """Form values arrive as one-element lists; the API sends scalars."""
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise OptionError(name, f"expected one value, got {len(value)}")
        value = value[0]
    if isinstance(value, bytes):
        raise OptionError(name, "file uploads are not accepted")
    if value is None or isinstance(value, dict | bool):
        raise OptionError(name, f"expected a single value, got {type(value).__name__}")
    return value


def _text(name: str, value) -> str:
    value = _single(name, value)
    if not isinstance(value, str):
        raise OptionError(name, f"expected a name, got {_shown(value)}")
    value = value.strip()
    if len(value) > MAX_TEXT:
        raise OptionError(name, f"the value is longer than {MAX_TEXT} characters")
    return value


def _shown(value) -> str:
    """A refused value as quoted in a message: short, one line (never a 5,000-digit repr)."""
    if isinstance(value, int) and not -MAX_EXACT <= value <= MAX_EXACT:
        return "a very large number"
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _number(name: str, value, *, low: float, high: float, integer: bool, unit: str) -> float:
    raw = _single(name, value)
    if isinstance(raw, str):
        text = raw.strip()
        if unit == "GiB" and text[-1:] in ("G", "g"):
            text = text[:-1]
        try:
            raw = float(text)
        except ValueError:
            raise OptionError(name, f"{_shown(raw)} is not a number; allowed: {low:g} to {high:g} {unit}") from None
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        raise OptionError(name, f"{_shown(raw)} is not a number; allowed: {low:g} to {high:g} {unit}")
    if isinstance(raw, int) and not -MAX_EXACT <= raw <= MAX_EXACT:
        # a huge integer (JSON allows 400 digits) would overflow float(); it is out of range anyway
        raise OptionError(name, f"the number is out of range; allowed: {low:g} to {high:g} {unit}")
    if not math.isfinite(raw):
        raise OptionError(name, f"{_shown(raw)} is not a number; allowed: {low:g} to {high:g} {unit}")
    if integer and raw != int(raw):
        raise OptionError(name, f"{raw:g} is not a whole number; allowed: {low:g} to {high:g} {unit}")
    if not low <= raw <= high:
        raise OptionError(name, f"{raw:g} is out of range; allowed: {low:g} to {high:g} {unit}")
    return int(raw) if integer else float(raw)


def validate_options(raw: dict | None, ctx: SpawnContext) -> SessionRequest:
    """Check ``raw`` user_options against the proposals, profile and quota.

    Missing options take the defaults; unknown ones are refused.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise OptionError("options", "expected a set of named options")
    unknown = sorted(str(k) for k in raw if k not in OPTION_NAMES)
    if unknown:
        raise OptionError(unknown[0], f"unknown option; allowed options: {', '.join(OPTION_NAMES)}")

    # proposal
    props = ctx.selectable_proposals()
    allowed_ids = [p.id for p in props] + ([NO_PROPOSAL] if ctx.no_proposal_allowed else [])
    if not allowed_ids:
        raise OptionError("proposal", "you have no active proposal to start a session for")
    pid = _text("proposal", raw["proposal"]) if "proposal" in raw else allowed_ids[0]
    if pid not in allowed_ids:
        raise OptionError("proposal", f'"{pid}" is not one of your active proposals; allowed: {", ".join(allowed_ids)}')
    proposal_id = None if pid == NO_PROPOSAL else pid

    # profile, filtered by the proposal's instrument
    profiles = ctx.profiles_for(proposal_id)
    slugs = [p.slug for p in profiles]
    if not slugs:
        raise OptionError("profile", f"no technique profile is offered for proposal {pid}")
    slug = _text("profile", raw["profile"]) if "profile" in raw else slugs[0]
    if slug not in slugs:
        where = f"proposal {pid}" if proposal_id else "a session without proposal"
        raise OptionError("profile", f'"{slug}" is not offered for {where}; allowed: {", ".join(slugs)}')
    profile = ctx.catalogue.get(slug)

    backends = ctx.backends_for(profile)
    backend = _text("backend", raw["backend"]) if "backend" in raw else backends[0]
    if backend not in backends:
        raise OptionError("backend", f'"{backend}" is not available for the {slug} profile; allowed: {", ".join(backends)}')

    mx, df = profile.max, profile.default
    cpu = _number("cpu", raw.get("cpu", df.cpu), low=1, high=max(1, int(mx.cpu)), integer=True, unit="CPUs")
    mem_gib = _number("memory", raw.get("memory", df.memory / GIB), low=0.5, high=mx.memory / GIB,
                      integer=False, unit="GiB")
    gpu = _number("gpu", raw.get("gpu", df.gpu), low=0, high=mx.gpu, integer=True, unit="GPUs")
    hours = _number("hours", raw.get("hours", df.hours), low=0.25, high=mx.hours, integer=False, unit="hours")
    request = SessionRequest(proposal_id, slug, backend, int(cpu), int(mem_gib * GIB), int(gpu), hours)
    check_quota(request, ctx)
    return request


def check_quota(request: SessionRequest, ctx: SpawnContext) -> None:
    """Refuse ``request`` if it does not fit beside the user's other live sessions."""
    for other in ctx.others:
        if other.key == request.key:
            what = f"proposal {request.proposal}" if request.proposal else "no proposal"
            raise OptionError(
                "profile", f"you already have a session for {what} with the {request.profile} profile; "
                "open or stop it, or choose another profile",
            )
    _fit(request, ctx.quota, ctx.used(), "your quota")
    if request.proposal and request.proposal in ctx.proposal_quotas:
        same = total(o for o in ctx.others if o.proposal == request.proposal)
        _fit(request, ctx.proposal_quotas[request.proposal], same, f"the quota of proposal {request.proposal}")


def _fit(request: SessionRequest, quota: Quota, used: Usage, whose: str) -> None:
    left = available(quota, used)
    if left.sessions < 1:
        raise OptionError(
            "sessions", f"{whose} allows {quota.sessions} session(s) at once and you have {used.sessions}; "
            "stop one first",
        )
    for name in ("cpu", "memory", "gpu", "hours"):
        want = getattr(request, name)
        if want > getattr(left, name):
            raise OptionError(
                name, f"{format_amount(name, want)} would exceed {whose}: you use "
                f"{format_amount(name, getattr(used, name))} of {format_amount(name, getattr(quota, name))} "
                f"in other sessions; allowed: at most {format_amount(name, getattr(left, name))}",
            )
