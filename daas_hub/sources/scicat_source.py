"""Accounts and proposals from SciCat's REST API.

A functional account logs in; a person's facility account comes from SciCat's
user identities (matched on their UmbrellaID subject, username or email), and
their proposals are those whose ``ownerGroup`` or ``accessGroups`` include one of
that identity's ``accessGroups``.

Two API shapes are spoken (``api_version``):

- ``v4``: scicat-backend-next (SciCat 4.x; its paths start ``/api/v3``): ``POST
  auth/login`` answers ``access_token``, requests carry ``Authorization: Bearer``,
  ``GET useridentities/findOne?filter=``, ``GET proposals?filters=`` with MongoDB
  operators (``$or``, ``$in``).
- ``v3``: the LoopBack backend (SciCat 3.x): ``POST Users/login`` answers ``id``,
  requests carry ``?access_token=``, ``GET UserIdentities/findOne?filter=``,
  ``GET Proposals?filter=`` with LoopBack operators (``or``, ``inq``).

Responses are validated here rather than with ``scicat-sdk-py``'s models: those
require fields only SciCat 4 returns (``keywords``, ``type``, ``isPublished``,
``createdBy``...), so they reject v3 answers, and nothing they check is needed
for the mapping.

Tests (tests/test_sources_scicat.py) replay the documented response shapes from
a loopback HTTP server; no SciCat (NestJS + MongoDB) runs on the test machine.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from traitlets import Dict, Enum, Float, Int, Unicode, validate

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
)
from .base import ProposalList, ProposalSource, bounded, read_secret

#: per API version: login path, token field, identity path, proposals path and filter parameter
API_SHAPES = {
    "v4": {"login": "auth/login", "token": "access_token", "identities": "useridentities/findOne",
           "proposals": "proposals", "filter_param": "filters", "or": "$or", "in": "$in"},
    "v3": {"login": "Users/login", "token": "id", "identities": "UserIdentities/findOne",
           "proposals": "Proposals", "filter_param": "filter", "or": "or", "in": "inq"},
}



class TokenRejected(SourceUnavailable):
    """SciCat refused the reader's token (HTTP 401): log in again once."""

class ShapeError(ValueError):
    """A SciCat answer that does not have the documented shape."""


def _require(obj, key: str, kind, where: str):
    if not isinstance(obj, dict) or key not in obj or obj[key] is None:
        raise ShapeError(f"{where}: no '{key}'")
    if not isinstance(obj[key], kind):
        raise ShapeError(f"{where}: '{key}' is a {type(obj[key]).__name__}, not a {kind.__name__}")
    return obj[key]


def _date(value, where: str) -> datetime:
    try:
        d = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ShapeError(f"{where}: {value!r} is not an ISO 8601 date") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def proposal_from_scicat(doc: dict, account: Account, *, facility: str, raw_template: str = "",
                         processed_template: str = "") -> Proposal:
    """A :class:`Proposal` from one SciCat proposal document (v3 or v4); pure."""
    pid = _require(doc, "proposalId", str, "proposal")
    where = f"proposal {pid}"
    title = _require(doc, "title", str, where)
    periods = doc.get("MeasurementPeriodList") or []
    if not isinstance(periods, list):
        raise ShapeError(f"{where}: 'MeasurementPeriodList' is not a list")
    beamtimes, instrument = [], ""
    for i, period in enumerate(periods):
        pw = f"{where} > MeasurementPeriodList[{i}]"
        instrument = instrument or _require(period, "instrument", str, pw)
        if period.get("start") and period.get("end"):
            beamtimes.append(Beamtime(_date(period["start"], pw), _date(period["end"], pw)))
    if not beamtimes and doc.get("startTime") and doc.get("endTime"):
        beamtimes.append(Beamtime(_date(doc["startTime"], where), _date(doc["endTime"], where)))
    if not instrument and isinstance(doc.get("instrumentIds"), list) and doc["instrumentIds"]:
        instrument = str(doc["instrumentIds"][0])
    pi = (doc.get("pi_email") or "").casefold()
    role = MemberRole.PI if account.email and account.email.casefold() == pi else MemberRole.MEMBER
    fields = {"proposal_id": pid, "instrument": instrument, "owner_group": doc.get("ownerGroup") or "",
              "year": beamtimes[0].start.year if beamtimes else ""}
    return Proposal(
        id=pid, title=title, instrument=instrument, facility=facility, state=ProposalState.ACTIVE,
        members=(Member(account.username, role),), beamtimes=tuple(beamtimes),
        data=DataLocations(raw=raw_template.format(**fields) or None,
                           processed=processed_template.format(**fields) or None),
    )


class ScicatProposalSource(ProposalSource):
    """Proposals from SciCat (docs/sources/scicat.md)."""

    url = Unicode(
        "",
        config=True,
        help="""The SciCat API base URL, up to and including ``/api/v3``.

        Example: ``https://scicat.example.org/api/v3``
        """,
    )

    api_version = Enum(
        ["v4", "v3"], "v4", config=True,
        help="""``v4`` for scicat-backend-next (SciCat 4.x), ``v3`` for the LoopBack backend.""",
    )

    reader_username = Unicode(
        "", config=True,
        help="""The functional account the hub logs in as; it must read user identities
        and all proposals (e.g. a member of SciCat's ``adminGroups``). Example: ``"daas-reader"``""",
    )

    password = Unicode("", config=True, help="""The reader's password. Prefer ``password_file``.""")

    password_file = Unicode(
        "", config=True,
        help="""File holding the reader's password (first line). Example: ``/etc/daas-hub/secrets/scicat``""",
    )

    identity_fields = Dict(
        {Provider.UMBRELLA.value: {"field": "externalId", "value": "{subject}"},
         "*": {"field": "profile.username", "value": "{username}"}},
        config=True,
        help="""Per login provider (``*`` for the others): which user identity field
        identifies the person, and its value (``{subject}``, ``{username}``, ``{email}``).

        Example: ``{"umbrella": {"field": "profile.email", "value": "{email}"}}``
        """,
    )

    @validate("identity_fields")
    def _check_identity_fields(self, proposal):
        known = {p.value for p in Provider} | {"*"}
        for name, rule in proposal["value"].items():
            if name not in known:
                raise ValueError(f"ScicatProposalSource.identity_fields: {name!r} is not a login provider "
                                 f"kind; use one of {sorted(known)}")
            if not isinstance(rule, dict) or set(rule) != {"field", "value"}:
                raise ValueError(f"ScicatProposalSource.identity_fields.{name} must be "
                                 f'{{"field": ..., "value": ...}}, not {rule!r}')
        return proposal["value"]

    facility = Unicode("", config=True, help="""Facility name set on the proposals. Example: ``"PSI"``""")

    raw_template = Unicode(
        "", config=True,
        help="""The raw data folder, with ``{proposal_id}``, ``{owner_group}``,
        ``{instrument}``, ``{year}``. Example: ``"/sls/{instrument}/data/{owner_group}/raw"``""",
    )

    processed_template = Unicode("", config=True, help="""The processed data folder, same fields as ``raw_template``.""")

    max_proposals = Int(1000, config=True, help="""Most proposals read for one person.""")

    timeout = Float(15, config=True, help="""Seconds each request to SciCat may take.""")

    token_lifetime = Float(
        3000, config=True,
        help="""Seconds a login token is reused before logging in again (when SciCat's
        answer does not say; SciCat's default lifetime is one hour).""",
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._token: str | None = None
        self._token_until = 0.0

    def check(self) -> None:
        for key in ("url", "reader_username"):
            if not getattr(self, key):
                raise SettingsError("site settings", f"proposal_source > {key}", "is not set",
                                    "set the SciCat API URL and the reader account (docs/sources/scicat.md)")
        if not self.url.startswith(("http://", "https://")):
            raise SettingsError("site settings", "proposal_source > url", f"{self.url!r} is not an http(s) URL",
                                "write the API base URL, e.g. https://scicat.example.org/api/v3")
        read_secret(self.password, self.password_file, setting="proposal_source > password_file")

    @property
    def _shape(self) -> dict:
        return API_SHAPES[self.api_version]

    async def _http(self, method: str, path: str, *, query: dict | None = None, body: dict | None = None,
                    auth: bool = True):
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

        query = dict(query or {})
        headers = {"Accept": "application/json"}
        if auth:
            token = await self._login()
            if self.api_version == "v3":
                query["access_token"] = token
            else:
                headers["Authorization"] = f"Bearer {token}"
        url = f"{self.url.rstrip('/')}/{path}"
        if query:
            url += "?" + urlencode(query)
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = HTTPRequest(url, method=method, headers=headers, body=json.dumps(body) if body is not None else None,
                              request_timeout=self.timeout, connect_timeout=self.timeout)
        where = f"SciCat {method} {self.url.rstrip('/')}/{path}"  # never the query: it may hold the token
        try:
            response = await bounded(AsyncHTTPClient().fetch(request), self.timeout + 1, where)
        except HTTPClientError as e:
            if e.code == 401 and auth:
                self._token = None
                raise TokenRejected(f"{where}: HTTP 401 {e.message}") from None
            if e.code == 404 and path.endswith("findOne"):
                return None
            raise SourceUnavailable(f"{where}: HTTP {e.code} {e.message}") from None
        except OSError as e:
            raise SourceUnavailable(f"{where}: {e}") from None
        if not response.body:
            return None
        try:
            return json.loads(response.body)
        except ValueError:
            raise SourceUnavailable(f"{where}: the answer is not JSON") from None

    async def _login(self) -> str:
        if self._token and time.monotonic() < self._token_until:
            return self._token
        secret = read_secret(self.password, self.password_file, setting="proposal_source > password_file")
        answer = await self._http("POST", self._shape["login"],
                                  body={"username": self.reader_username, "password": secret}, auth=False)
        try:
            token = _require(answer, self._shape["token"], str, "SciCat login answer")
        except ShapeError as e:
            raise SourceUnavailable(f"{e} (is api_version {self.api_version!r} right?)") from None
        lifetime = answer.get("expires_in") or answer.get("ttl") or self.token_lifetime
        self._token = token
        self._token_until = time.monotonic() + min(float(lifetime) * 0.9, self.token_lifetime)
        return token

    async def _call(self, method, path, **kwargs):
        """One request; a rejected token (HTTP 401) logs in again once."""
        try:
            return await self._http(method, path, **kwargs)
        except TokenRejected:
            return await self._http(method, path, **kwargs)

    async def _identity(self, field: str, value: str) -> dict | None:
        where = {field: value}
        answer = await self._call("GET", self._shape["identities"], query={"filter": json.dumps({"where": where})})
        if not answer:
            return None
        try:
            profile = _require(answer, "profile", dict, "SciCat user identity")
            _require(profile, "username", str, "SciCat user identity > profile")
            groups = profile.get("accessGroups") or []
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ShapeError("SciCat user identity > profile: 'accessGroups' is not a list of names")
        except ShapeError as e:
            raise SourceUnavailable(str(e)) from None
        return profile

    async def resolve_account(self, identity: Identity) -> Account | None:
        rule = self.identity_fields.get(identity.provider) or self.identity_fields.get("*")
        if not rule:
            return None
        value = rule["value"].format(subject=identity.subject, username=identity.username or "",
                                     email=identity.email or "", issuer=identity.issuer)
        if not value:
            return None
        profile = await self._identity(rule["field"], value)
        if profile is None:
            return None
        return Account(username=profile["username"], roles=frozenset({"user"}),
                       display_name=profile.get("displayName") or "", email=profile.get("email"))

    async def proposals_for(self, account: Account) -> ProposalList:
        profile = await self._identity("profile.username", account.username)
        groups = sorted(set(profile.get("accessGroups") or [])) if profile else []
        if not groups:
            return ProposalList()
        s = self._shape
        where = {s["or"]: [{"ownerGroup": {s["in"]: groups}}, {"accessGroups": {s["in"]: groups}}]}
        if self.api_version == "v4":
            filters = {"where": where, "limits": {"limit": self.max_proposals, "skip": 0}}
        else:
            filters = {"where": where, "limit": self.max_proposals}
        answer = await self._call("GET", s["proposals"], query={s["filter_param"]: json.dumps(filters)})
        if not isinstance(answer, list):
            raise SourceUnavailable("SciCat proposals answer: not a list")
        proposals = []
        for doc in answer:
            try:
                proposals.append(proposal_from_scicat(
                    doc, account, facility=self.facility, raw_template=self.raw_template,
                    processed_template=self.processed_template))
            except ShapeError as e:
                self.log.error("Skipping a SciCat proposal that does not have the documented shape: %s", e)
            except UnsafeValue as e:
                self.log.error("Skipping a SciCat proposal: its %s", e)
        return ProposalList(proposals)
