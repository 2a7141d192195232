"""Proposals from a YAML file: the embedded default, and small sites' choice.

The file format is documented in docs/proposals.md and checked against
``daas_hub/schemas/proposals.schema.yaml``. The file is re-read when it changes,
so an admin's edit reaches the next login or spawn without a hub restart; if an
edit breaks the file, the last good version stays in use and the error is logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from traitlets import Bool, Unicode

from ..errors import SettingsError, SourceUnavailable
from ..model import (
    Account,
    Beamtime,
    DataLocations,
    Identity,
    Member,
    MemberRole,
    Proposal,
    ProposalState,
    Provider,
    UnsafeValue,
    _as_datetime,
    check_proposal_id,
    check_username,
)
from ..schema import read_yaml, validate
from .base import ProposalSource


@dataclass(frozen=True)
class ProposalsFile:
    """One parsed, validated proposals file."""

    facility: str
    accounts: dict[str, Account]
    umbrella: dict[str, str]  # UmbrellaID subject -> username
    emails: dict[str, str]  # casefolded email -> username
    proposals: tuple[Proposal, ...]
    #: username -> the proposals they are a member of (built once per file, for fast lookups)
    by_member: dict[str, tuple[Proposal, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        index: dict[str, list[Proposal]] = {}
        for p in self.proposals:
            for username in dict.fromkeys(m.username for m in p.members):
                index.setdefault(username, []).append(p)
        object.__setattr__(self, "by_member", {u: tuple(ps) for u, ps in index.items()})

    def proposals_of(self, username: str) -> list[Proposal]:
        return list(self.by_member.get(username, ()))


def parse_proposals_file(document: dict, file: str | Path) -> ProposalsFile:
    """Build a :class:`ProposalsFile` from a parsed YAML document; pure."""
    validate(document, "proposals", file)
    base = Path(file).resolve().parent
    facility = document["facility"]
    accounts: dict[str, Account] = {}
    umbrella: dict[str, str] = {}
    emails: dict[str, str] = {}
    for i, a in enumerate(document["accounts"]):
        entry = f'accounts[{i}] "{a["username"]}"'
        _check(file, entry, check_username, a["username"])
        if a["username"] in accounts:
            raise SettingsError(file, entry, "this username is listed twice", "keep one entry per account")
        sub = a.get("umbrella_id")
        if sub is not None:
            if sub in umbrella:
                raise SettingsError(
                    file, entry, f'UmbrellaID "{sub}" is already linked to "{umbrella[sub]}"',
                    "link each UmbrellaID to one facility account",
                )
            umbrella[sub] = a["username"]
        if a.get("email"):
            emails.setdefault(a["email"].casefold(), a["username"])
        accounts[a["username"]] = Account(
            username=a["username"],
            uid=a.get("uid"),
            gid=a.get("gid"),
            roles=frozenset(a.get("roles", ["user"])),
            display_name=a.get("display_name", ""),
            email=a.get("email"),
        )
    proposals: list[Proposal] = []
    seen: set[str] = set()
    for i, p in enumerate(document["proposals"]):
        entry = f'proposals[{i}] "{p["id"]}"'
        _check(file, entry, check_proposal_id, p["id"])
        if p["id"] in seen:
            raise SettingsError(file, entry, "this proposal id is listed twice", "keep one entry per proposal")
        seen.add(p["id"])
        members = []
        for j, m in enumerate(p["members"]):
            if m["username"] not in accounts:
                raise SettingsError(
                    file, f"{entry} > members[{j}]",
                    f'"{m["username"]}" is not one of the accounts in this file',
                    "add the account under 'accounts:' or correct the username",
                )
            members.append(Member(m["username"], MemberRole(m.get("role", "member"))))
        beamtimes = []
        key = "beamtimes" if "beamtimes" in p or "sessions" not in p else "sessions"  # 0.1 wrote "sessions"
        if "beamtimes" in p and "sessions" in p:
            raise SettingsError(file, f"{entry} > sessions", "both beamtimes and sessions (its old name) are given",
                                "keep only beamtimes")
        for j, s in enumerate(p.get(key, [])):
            try:
                start, end = _as_datetime(s["start"]), _as_datetime(s["end"])
            except ValueError as e:
                raise SettingsError(
                    file, f"{entry} > {key}[{j}]", f"not a valid date ({e})",
                    "write an ISO 8601 date, e.g. 2026-11-02T08:00:00",
                ) from None
            if (start.tzinfo is None) != (end.tzinfo is None):
                raise SettingsError(
                    file, f"{entry} > {key}[{j}]",
                    "one of start and end has a time zone and the other has none",
                    "give both a UTC offset (e.g. +01:00), or neither",
                )
            if end < start:
                raise SettingsError(
                    file, f"{entry} > {key}[{j}]", "the beamtime ends before it starts",
                    "swap start and end, or correct the dates",
                )
            beamtimes.append(Beamtime(start, end))
        data = p.get("data", {})
        proposals.append(
            Proposal(
                id=p["id"],
                title=p["title"],
                instrument=p["instrument"],
                facility=facility,
                state=ProposalState(p.get("state", "active")),
                members=tuple(members),
                beamtimes=tuple(beamtimes),
                data=DataLocations(
                    raw=_resolve(base, data.get("raw")),
                    processed=_resolve(base, data.get("processed")),
                ),
                gid=p.get("gid"),
            )
        )
    return ProposalsFile(facility, accounts, umbrella, emails, tuple(proposals))


def _check(file, entry: str, check, value) -> None:
    """A catalogue id or username that is unsafe to use is a settings error naming the entry."""
    try:
        check(value)
    except UnsafeValue as e:
        raise SettingsError(file, entry, str(e), "rename it in the catalogue (the hub uses it in "
                            "folder, group and account names)") from None


def _resolve(base: Path, path: str | None) -> str | None:
    if path is None:
        return None
    return str(base / path) if not os.path.isabs(path) else path


class YamlProposalSource(ProposalSource):
    """Accounts and proposals from one YAML file (see docs/proposals.md)."""

    path = Unicode(
        "",
        config=True,
        help="""Path of the proposals file (YAML). Relative data paths inside it
        are taken relative to the file's folder.

        Example: ``/etc/daas-hub/proposals.yaml``
        """,
    )

    match_email = Bool(
        False,
        config=True,
        help="""Also link an identity to an account when the identity's email equals
        the account's email (case-insensitive). Off by default: enable it only if
        every identity provider you accept verifies email addresses.
        """,
    )

    _file: ProposalsFile | None = None
    _mtime: float | None = None

    def check(self) -> None:
        if not self.path:
            raise SettingsError(
                "the site settings (or c.YamlProposalSource.path)", "proposal_source > path",
                "no proposals file is set",
                "set proposal_source.path in the site settings (or c.YamlProposalSource.path) "
                "to your proposals YAML file (docs/proposals.md)",
            )
        self._load()

    def _load(self) -> ProposalsFile:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            mtime = None
        if self._file is not None and mtime == self._mtime:
            return self._file
        try:
            document = read_yaml(
                self.path, what="proposals",
                fix_missing="create it (docs/proposals.md) or correct proposal_source.path",
            )
            parsed = parse_proposals_file(document, self.path)
        except SettingsError as e:
            if self._file is None:
                raise
            self.log.error("Keeping the last good proposals file; the new one has an error: %s", e)
            return self._file
        self._file, self._mtime = parsed, mtime
        return parsed

    def _file_or_unavailable(self) -> ProposalsFile:
        try:
            return self._load()
        except SettingsError as e:
            raise SourceUnavailable(str(e)) from None

    async def resolve_account(self, identity: Identity) -> Account | None:
        cat = self._file_or_unavailable()
        username = None
        if identity.provider == Provider.UMBRELLA:
            username = cat.umbrella.get(identity.subject)
        elif identity.username in cat.accounts:
            username = identity.username
        if username is None and self.match_email and identity.email:
            username = cat.emails.get(identity.email.casefold())
        return cat.accounts.get(username) if username else None

    async def proposals_for(self, account: Account) -> list[Proposal]:
        return self._file_or_unavailable().proposals_of(account.username)

    def accounts(self) -> list[Account]:
        """Every account in the file (the demo login lists them)."""
        return list(self._file_or_unavailable().accounts.values())
