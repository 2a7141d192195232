"""Accounts and proposals from ICAT, through python-icat.

A reader account logs in with a configured ICAT authenticator plugin (``simple``,
``db``, ``ldap``...). A person's proposals are the investigations they are an
InvestigationUser of (optionally only some facilities, instruments and roles);
investigations sharing a proposal id (by default the investigation ``name``) are
one proposal, each visit one beamtime.

python-icat is blocking (SOAP through suds, and it downloads the server's WSDL
when the client is created): every call runs in one worker thread, bounded by
``timeout``. The session is refreshed before it expires, and a call that finds
the session expired logs in again once and retries.

Tests: no ICAT server (Payara + icat.server) can run on the test machine, so
tests/test_sources_icat.py drives this adapter with a stand-in shaped like
python-icat's Client that asserts the exact queries sent; the opt-in contract
test (tests/test_sources_icat_contract.py, ``ICAT_TEST_URL``) runs it against a
real ICAT.
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from traitlets import Bool, Dict, Enum, Float, List, Type, Unicode, validate

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
    check_proposal_id,
    check_username,
)
from .base import ProposalList, ProposalSource, in_thread, read_secret

_now = time.monotonic  # the clock session refreshes are measured on (tests set their own)


def jpql_string(value: str) -> str:
    """``value`` as a JPQL string literal: single quotes doubled, e.g. ``'o''brien'``."""
    if "\x00" in value:
        raise ValueError("a NUL character cannot be part of an ICAT query")
    return "'" + value.replace("'", "''") + "'"


def user_query(field: str, value: str) -> str:
    """The ICAT query for the User whose ``field`` equals ``value``; pure."""
    return f"SELECT u FROM User u WHERE u.{field} = {jpql_string(value)}"


def investigations_query(user_name: str, *, facility: str = "", instruments=(), roles=()) -> str:
    """The ICAT query for ``user_name``'s investigations, with what mapping needs; pure."""
    joins = ["JOIN i.investigationUsers iu", "JOIN iu.user u"]
    where = [f"u.name = {jpql_string(user_name)}"]
    if facility:
        joins.append("JOIN i.facility f")
        where.append(f"f.name = {jpql_string(facility)}")
    if instruments:
        joins += ["JOIN i.investigationInstruments ii", "JOIN ii.instrument ins"]
        where.append(f"ins.name IN ({', '.join(jpql_string(n) for n in instruments)})")
    if roles:
        where.append(f"iu.role IN ({', '.join(jpql_string(r) for r in roles)})")
    return (
        f"SELECT DISTINCT i FROM Investigation i {' '.join(joins)} WHERE {' AND '.join(where)} "
        "INCLUDE i.facility, i.investigationInstruments.instrument, i.investigationUsers.user"
    )


def dataset_locations_query(investigation_ids) -> str:
    ids = ", ".join(str(int(i)) for i in investigation_ids)
    return (
        "SELECT ds FROM Dataset ds JOIN ds.investigation i "
        f"WHERE i.id IN ({ids}) AND ds.location IS NOT NULL INCLUDE ds.investigation"
    )


class IcatProposalSource(ProposalSource):
    """Proposals from ICAT (docs/sources/icat.md)."""

    url = Unicode(
        "",
        config=True,
        help="""The ICAT server's URL (python-icat fetches ``<url>/ICATService/ICAT?wsdl``).

        Example: ``https://icat.example.org``
        """,
    )

    auth = Unicode(
        "simple",
        config=True,
        help="""The ICAT authenticator plugin the reader account logs in with.

        Example: ``"db"``, ``"ldap"`` or ``"simple"``.
        """,
    )

    reader_username = Unicode(
        "",
        config=True,
        help="""The reader account's user name for the ``auth`` plugin. It must be
        allowed to read Users, Investigations, InvestigationUsers, Instruments and
        (with ``data_location: datasets``) Datasets (docs/sources/icat.md has the rules).

        Example: ``"daas-reader"``
        """,
    )

    password = Unicode("", config=True, help="""The reader's password. Prefer ``password_file``.""")

    password_file = Unicode(
        "",
        config=True,
        help="""File holding the reader's password (first line), readable only by the
        hub's account. Example: ``/etc/daas-hub/secrets/icat-reader``""",
    )

    check_cert = Bool(True, config=True, help="""Verify the ICAT server's TLS certificate.""")

    ca_file = Unicode("", config=True, help="""CA bundle for the ICAT server's certificate (empty: the system's).""")

    facility = Unicode(
        "",
        config=True,
        help="""Only investigations of this ICAT Facility (its ``name``); empty: all.
        Also the facility name set on proposals. Example: ``"ESRF"``""",
    )

    instruments = List(
        Unicode(),
        config=True,
        help="""Only investigations on these instruments (ICAT Instrument ``name``);
        empty: all. Example: ``["ID01", "ID11"]``""",
    )

    roles = List(
        Unicode(),
        config=True,
        help="""Only investigations where the person's InvestigationUser ``role`` is one
        of these; empty: any role. Example: ``["principal_experimenter", "experimenter"]``""",
    )

    role_map = Dict(
        {"principal_experimenter": "pi", "PI": "pi", "principal_investigator": "pi",
         "local_contact": "local-contact", "LOCAL_CONTACT": "local-contact"},
        config=True,
        help="""How InvestigationUser roles translate to daas-hub roles (``pi``,
        ``member``, ``local-contact``); roles not listed are ``member``.""",
    )

    user_match = Enum(
        ["name", "email", "orcidId"],
        "name",
        config=True,
        help="""The ICAT User field ``identity_templates`` are matched against (for
        the providers listed there); other logins are matched on ``name``
        through ``user_name_template``.""",
    )

    identity_templates = Dict(
        {},
        config=True,
        help="""Per login provider, the value the ICAT User's ``user_match`` field
        must have: a Python format string with ``{subject}``, ``{username}``,
        ``{email}``. Providers not listed are matched on the User ``name``
        built by ``user_name_template`` from their username.

        Example, with ``user_match: email``: ``{"umbrella": "{email}"}`` links an
        UmbrellaID to the facility's ICAT user with the email UmbrellaID released;
        with ``user_match: orcidId``: ``{"umbrella": "{subject}"}`` if the
        identity provider's subject is an ORCID iD.
        """,
    )

    @validate("identity_templates")
    def _check_identity_templates(self, proposal):
        known = {p.value for p in Provider}
        unknown = sorted(set(proposal["value"]) - known)
        if unknown:
            raise ValueError(f"IcatProposalSource.identity_templates: {unknown} are not login provider kinds; "
                             f"use {sorted(known)}")
        return proposal["value"]

    user_name_template = Unicode(
        "{username}",
        config=True,
        help="""The ICAT User ``name`` of a facility account, e.g. ``"ldap/{username}"``.""",
    )

    account_pattern = Unicode(
        r"^(?:[^/]*/)?(?P<username>[^/]+)$",
        config=True,
        help="""Regular expression extracting the facility account name (group
        ``username``) from an ICAT User ``name``. The default drops the
        authenticator prefix: ``ldap/jdoe`` -> ``jdoe``.""",
    )

    proposal_id_template = Unicode(
        "{name}",
        config=True,
        help="""The proposal id of an investigation (``{name}``, ``{visit_id}``).
        Investigations with the same id are one proposal, each a beamtime.
        Example: ``"{name}"``, or ``"{name}-{visit_id}"`` for one proposal per visit.""",
    )

    data_location = Enum(
        ["template", "datasets", "none"],
        "template",
        config=True,
        help="""Where a proposal's raw data is: ``template`` (``raw_template``),
        ``datasets`` (the common folder of its datasets' ``location``), or ``none``.""",
    )

    raw_template = Unicode(
        "",
        config=True,
        help="""The raw data folder, with ``{name}``, ``{visit_id}``, ``{instrument}``,
        ``{facility}``, ``{year}``. Example: ``"/data/visitor/{name}/{instrument}"``""",
    )

    processed_template = Unicode(
        "",
        config=True,
        help="""The processed data folder, same fields as ``raw_template``.
        Example: ``"/data/processed/{name}"``""",
    )

    timeout = Float(20, config=True, help="""Seconds each ICAT call may take (a first call also fetches the WSDL).""")

    refresh_interval = Float(
        600,
        config=True,
        help="""Seconds between refreshes of the reader's session; keep it well under
        the server's session lifetime (icat.server's ``lifetimeMinutes``, 120 by default).""",
    )

    client_class = Type(
        "icat.client.Client",
        klass=object,
        config=True,
        help="""The python-icat client class (a site subclass may add a proxy or retries).""",
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._client = None
        self._lock = threading.Lock()
        self._next_refresh = 0.0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="daas-icat")

    # -- configuration
    def check(self) -> None:
        missing = [k for k in ("url", "reader_username") if not getattr(self, k)]
        if missing:
            raise SettingsError(
                "site settings", f"proposal_source > {missing[0]}", "is not set",
                "set the ICAT URL and reader account (docs/sources/icat.md)",
            )
        if not (self.password or self.password_file):
            raise SettingsError("site settings", "proposal_source > password_file", "no reader password is set",
                                "point password_file at a file holding it (docs/sources/icat.md)")
        read_secret(self.password, self.password_file, setting="proposal_source > password_file")
        try:
            if "username" not in re.compile(self.account_pattern).groupindex:
                raise re.error("no (?P<username>...) group")
        except re.error as e:
            raise SettingsError("site settings", "proposal_source > account_pattern",
                                f"not a usable regular expression ({e})",
                                "write a pattern with a (?P<username>...) group") from None

    # -- the session (runs in the worker thread)
    def _login(self):
        if self._client is None:
            kwargs = {"checkCert": self.check_cert}
            if self.ca_file:
                kwargs["caFile"] = self.ca_file
            self._client = self.client_class(self.url, **kwargs)
        secret = read_secret(self.password, self.password_file, setting="proposal_source > password_file")
        self._client.login(self.auth, {"username": self.reader_username, "password": secret})
        self._next_refresh = _now() + self.refresh_interval
        self.log.info("Logged in to ICAT %s as %s/%s", self.url, self.auth, self.reader_username)

    def _search(self, query: str) -> list:
        from icat.exception import ICATSessionError

        with self._lock:
            if self._client is None or self._client.sessionId is None:
                self._login()
            elif _now() >= self._next_refresh:
                try:
                    self._client.refresh()
                    self._next_refresh = _now() + self.refresh_interval
                except ICATSessionError:
                    self._login()
            try:
                return self._client.search(query)
            except ICATSessionError:
                self.log.info("ICAT session expired; logging in again")
                self._login()
                return self._client.search(query)

    async def _call(self, query: str, what: str) -> list:
        from icat.exception import ICATError, ICATPrivilegesError

        def run():
            try:
                return self._search(query)
            except ICATPrivilegesError as e:
                raise SourceUnavailable(f"ICAT refused the reader account ({e}); see docs/sources/icat.md "
                                        "for the rules it needs") from None
            except ICATError as e:
                raise SourceUnavailable(f"ICAT: {e}") from None
            except OSError as e:
                raise SourceUnavailable(f"ICAT at {self.url} cannot be reached: {e}") from None
        return await in_thread(self._executor, run, self.timeout, f"ICAT ({what})")

    # -- mapping
    def _account_name(self, icat_name: str) -> str | None:
        m = re.match(self.account_pattern, icat_name or "")
        return m.group("username") if m else None

    def _user_lookup(self, identity: Identity) -> tuple[str, str] | None:
        """(ICAT User field, value) identifying ``identity``, or None."""
        fields = {"subject": identity.subject, "username": identity.username or "", "email": identity.email or "",
                  "issuer": identity.issuer}
        template = self.identity_templates.get(identity.provider)
        if template is not None:
            value = template.format(**fields)
            return (self.user_match, value) if value else None
        if not identity.username:
            return None
        return "name", self.user_name_template.format(**fields)

    async def resolve_account(self, identity: Identity) -> Account | None:
        lookup = self._user_lookup(identity)
        if lookup is None:
            return None
        field, value = lookup
        try:
            query = user_query(field, value)
        except ValueError:
            return None
        users = await self._call(query, "user")
        if len(users) != 1:
            if users:
                self.log.error("%d ICAT users have %s = %r; refusing to guess", len(users), field, value)
            return None
        user = users[0]
        username = self._account_name(user.name)
        if username is None:
            self.log.error("ICAT user %r does not match account_pattern", user.name)
            return None
        return Account(username=username, roles=frozenset({"user"}),
                       display_name=getattr(user, "fullName", None) or "", email=getattr(user, "email", None))

    async def proposals_for(self, account: Account) -> ProposalList:
        icat_name = self.user_name_template.format(username=account.username)
        try:
            query = investigations_query(icat_name, facility=self.facility, instruments=self.instruments,
                                         roles=self.roles)
        except ValueError:
            return ProposalList()
        investigations = await self._call(query, "investigations")
        locations: dict[int, list[str]] = {}
        if self.data_location == "datasets" and investigations:
            datasets = await self._call(dataset_locations_query(i.id for i in investigations), "dataset locations")
            for ds in datasets:
                locations.setdefault(ds.investigation.id, []).append(ds.location)
        return ProposalList(self._to_proposals(investigations, locations))

    def _to_proposals(self, investigations, locations) -> list[Proposal]:
        grouped: dict[str, list] = {}
        for inv in investigations:
            pid = self.proposal_id_template.format(name=inv.name, visit_id=inv.visitId or "")
            grouped.setdefault(pid, []).append(inv)
        now = datetime.now(UTC)
        proposals = []
        for pid, visits in grouped.items():
            try:
                check_proposal_id(pid)
            except UnsafeValue as e:
                self.log.error("Skipping an ICAT investigation: its %s", e)
                continue
            first = visits[0]
            instrument = next((ii.instrument.name for v in visits for ii in (v.investigationInstruments or [])
                               if ii.instrument is not None), "")
            facility = first.facility.name if getattr(first, "facility", None) else self.facility
            members: dict[str, MemberRole] = {}
            for v in visits:
                for iu in v.investigationUsers or []:
                    name = self._account_name(iu.user.name) if iu.user is not None else None
                    if name and not _safe_username(name):
                        self.log.error("Leaving out a member of %s: ICAT user %r is no usable username",
                                       pid, iu.user.name)
                        name = None
                    if name:
                        role = MemberRole(self.role_map.get(iu.role or "", "member"))
                        if members.get(name) is not MemberRole.PI:
                            members[name] = role
            beamtimes = tuple(sorted(
                {Beamtime(_utc(v.startDate), _utc(v.endDate)) for v in visits if v.startDate and v.endDate},
                key=lambda b: b.start,
            ))
            release = getattr(first, "releaseDate", None)
            state = ProposalState.EMBARGOED if release and _utc(release) > now else ProposalState.ACTIVE
            fields = {"name": first.name, "visit_id": first.visitId or "", "instrument": instrument,
                      "facility": facility, "year": first.startDate.year if first.startDate else ""}
            raw = processed = None
            if self.data_location == "template":
                raw = self.raw_template.format(**fields) or None
            elif self.data_location == "datasets":
                paths = [loc for v in visits for loc in locations.get(v.id, [])]
                raw = _common_folder(paths)
            processed = self.processed_template.format(**fields) or None
            proposals.append(Proposal(
                id=pid, title=first.title or "", instrument=instrument, facility=facility, state=state,
                members=tuple(Member(n, r) for n, r in members.items()), beamtimes=beamtimes,
                data=DataLocations(raw=raw, processed=processed),
            ))
        return proposals

    async def close(self) -> None:
        def logout():
            with self._lock:
                if self._client is not None and self._client.sessionId:
                    self._client.logout()
        try:
            await in_thread(self._executor, logout, self.timeout, "ICAT (logout)")
        except Exception as e:  # noqa: BLE001 - closing is best effort
            self.log.warning("ICAT logout failed: %s", e)
        self._executor.shutdown(wait=False)


def _safe_username(name: str) -> bool:
    try:
        check_username(name)
    except UnsafeValue:
        return False
    return True


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _common_folder(paths: list[str]) -> str | None:
    if not paths:
        return None
    try:
        common = os.path.commonpath(paths)
    except ValueError:  # relative and absolute mixed
        return None
    return common if len(paths) > 1 or common != paths[0] else os.path.dirname(common) or common
