"""The facility's view of people and proposals, as plain frozen values.

No JupyterHub imports: these values travel from a :class:`ProposalSource` through
``auth_state`` (as dicts, see :meth:`Proposal.to_dict`) to the spawners.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime

#: a proposal id: letters, digits, ".", "_", "-", "+", starting with a letter or digit, at most
#: 64 characters. It becomes a folder name (~/proposals/<id>), a group name and a Slurm job
#: comment, so no "/", no "..", no spaces, no newlines, no unicode look-alikes.
PROPOSAL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
#: a facility username: a POSIX account name (letters, digits, ".", "_", "-", starting with a
#: letter, digit or "_"; at most 32 characters). Sessions run as it and homes are named after it.
USERNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}")


class UnsafeValue(ValueError):
    """A catalogue value (proposal id, username) that cannot be used safely in paths,
    group names or job scripts. The message names the value's kind; never shown raw."""

    def __init__(self, what: str, value):
        self.what = what
        self.value = value
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        super().__init__(f"{what} {shown} is not allowed: {RULES[what]}")


RULES = {
    "proposal id": "letters, digits, '.', '_', '+' and '-' only, starting with a letter or digit, "
                   "at most 64 characters",
    "username": "letters, digits, '.', '_' and '-' only, starting with a letter, digit or '_', "
                "at most 32 characters",
}


def check_proposal_id(value) -> str:
    """``value`` if it is a safe proposal id, else :class:`UnsafeValue`."""
    if not isinstance(value, str) or not PROPOSAL_ID_RE.fullmatch(value):
        raise UnsafeValue("proposal id", value)
    return value


def check_username(value) -> str:
    """``value`` if it is a safe facility username, else :class:`UnsafeValue`."""
    if not isinstance(value, str) or not USERNAME_RE.fullmatch(value):
        raise UnsafeValue("username", value)
    return value


class ProposalState(enum.StrEnum):
    """Where a proposal is in its life.

    ``active`` and ``embargoed`` proposals have their data mounted for the team
    (the embargo only keeps the data from the public). ``archived`` data has left
    the online storage: the proposal is listed, its data is not mounted, and the
    user is told to restore it through the facility's data portal.
    """

    ACTIVE = "active"
    EMBARGOED = "embargoed"
    ARCHIVED = "archived"


class MemberRole(enum.StrEnum):
    """A person's role on a proposal."""

    PI = "pi"
    MEMBER = "member"
    LOCAL_CONTACT = "local-contact"


@dataclass(frozen=True)
class Member:
    username: str
    role: MemberRole = MemberRole.MEMBER

    def __post_init__(self):
        check_username(self.username)


@dataclass(frozen=True)
class Beamtime:
    """One experimental session of a proposal on its instrument."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class DataLocations:
    """Where a proposal's data lives on the facility storage.

    ``raw`` is what the instrument wrote: always mounted read-only. ``processed``
    is the team's shared, persistent, writable space.
    """

    raw: str | None = None
    processed: str | None = None


@dataclass(frozen=True)
class Proposal:
    id: str
    title: str
    instrument: str
    facility: str
    state: ProposalState = ProposalState.ACTIVE
    members: tuple[Member, ...] = ()
    beamtimes: tuple[Beamtime, ...] = ()
    data: DataLocations = field(default_factory=DataLocations)
    #: the proposal's POSIX group (its data's group), if the source knows it
    gid: int | None = None

    def __post_init__(self):
        check_proposal_id(self.id)

    def role_of(self, username: str) -> MemberRole | None:
        """The role ``username`` holds on this proposal, or None."""
        for member in self.members:
            if member.username == username:
                return member.role
        return None

    @property
    def mountable(self) -> bool:
        return self.state is not ProposalState.ARCHIVED

    def to_dict(self) -> dict:
        """A JSON-ready dict (for ``auth_state``); :meth:`from_dict` reverses it."""
        d = {
            "id": self.id,
            "title": self.title,
            "instrument": self.instrument,
            "facility": self.facility,
            "state": self.state.value,
            "members": [{"username": m.username, "role": m.role.value} for m in self.members],
            "beamtimes": [
                {"start": s.start.isoformat(), "end": s.end.isoformat()} for s in self.beamtimes
            ],
            "data": {"raw": self.data.raw, "processed": self.data.processed},
        }
        if self.gid is not None:
            d["gid"] = self.gid
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Proposal:
        data = d.get("data") or {}
        return cls(
            id=str(d["id"]),
            title=d.get("title", ""),
            instrument=d.get("instrument", ""),
            facility=d.get("facility", ""),
            state=ProposalState(d.get("state", "active")),
            members=tuple(
                Member(m["username"], MemberRole(m.get("role", "member")))
                for m in d.get("members", ())
            ),
            beamtimes=tuple(
                Beamtime(_as_datetime(s["start"]), _as_datetime(s["end"]))
                for s in d.get("beamtimes", d.get("sessions", ()))  # "sessions": auth_state from 0.1
            ),
            data=DataLocations(raw=data.get("raw"), processed=data.get("processed")),
            gid=d.get("gid"),
        )


class Provider(enum.StrEnum):
    """The kind of login an identity comes from; sources link each kind differently.

    ``umbrella``: UmbrellaID (or any provider whose users create their own
    accounts), linked by subject; ``facility``: the facility's own SSO, which
    issues facility usernames; ``demo``: the demo login.
    """

    UMBRELLA = "umbrella"
    FACILITY = "facility"
    DEMO = "demo"


@dataclass(frozen=True)
class Identity:
    """Who the identity provider says signed in.

    ``provider`` names the kind of login (:class:`Provider`); ``subject``
    is the provider's stable id for the person, ``username`` and ``email`` are the
    claims it released, when it released them.
    """

    provider: Provider
    subject: str
    username: str | None = None
    email: str | None = None
    #: the provider's issuer URL: a subject is only unique within its issuer
    issuer: str = ""


@dataclass(frozen=True)
class Account:
    """A facility account: the POSIX identity sessions run as, and its roles."""

    username: str
    uid: int | None = None
    gid: int | None = None
    roles: frozenset[str] = frozenset()
    display_name: str = ""
    email: str | None = None

    def __post_init__(self):
        check_username(self.username)

    def to_dict(self) -> dict:
        return {
            "username": self.username,
            "uid": self.uid,
            "gid": self.gid,
            "roles": sorted(self.roles),
            "display_name": self.display_name,
            "email": self.email,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Account:
        return cls(
            username=d["username"],
            uid=d.get("uid"),
            gid=d.get("gid"),
            roles=frozenset(d.get("roles", ())),
            display_name=d.get("display_name", ""),
            email=d.get("email"),
        )


def _as_datetime(value) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
