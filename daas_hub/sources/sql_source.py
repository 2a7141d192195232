"""Accounts and proposals from the facility's user office database (SQLAlchemy).

The admin writes two parameterised queries (docs/sources/sql.md): one from an
identity to the facility account, one from the account to its proposals. Values
are always passed as bind parameters, never pasted into the SQL text, so a user
name such as ``x' OR '1'='1`` is only ever a value.

SQLAlchemy is blocking here (its async drivers vary by database): queries run in
a small thread pool, each bounded by ``timeout``, and the database is also asked
to cancel statements that run longer (``statement_timeout`` on PostgreSQL).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from traitlets import Dict, Float, Int, Unicode

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
    UnsafeValue,
    check_proposal_id,
)
from .base import ProposalList, ProposalSource, in_thread, read_secret

#: bind parameters the account query may use
ACCOUNT_PARAMS = frozenset({"provider", "issuer", "subject", "username", "email"})
#: bind parameters the proposals query may use
PROPOSAL_PARAMS = frozenset({"username", "uid", "email"})
ACCOUNT_COLUMNS = ("username", "uid", "gid", "roles", "display_name", "email")
PROPOSAL_COLUMNS = ("id", "title", "instrument", "state", "role", "facility", "start", "end", "raw", "processed")

_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def query_params(sql: str) -> set[str]:
    """The ``:name`` bind parameters in ``sql`` (``::type`` casts are not parameters)."""
    return set(_PARAM.findall(sql))


def account_from_row(row: dict) -> Account:
    """An :class:`Account` from one row of the account query; pure."""
    roles = row.get("roles") or ()
    if isinstance(roles, str):
        roles = [r.strip() for r in roles.replace(";", ",").split(",")]
    return Account(
        username=str(row["username"]),
        uid=int(row["uid"]) if row.get("uid") is not None else None,
        gid=int(row["gid"]) if row.get("gid") is not None else None,
        roles=frozenset(r for r in roles if r) or frozenset({"user"}),
        display_name=row.get("display_name") or "",
        email=row.get("email"),
    )


def proposals_from_rows(rows: list[dict], account: Account, facility: str, roles: dict[str, str],
                        unsafe: list | None = None) -> list[Proposal]:
    """Proposals from the proposals query's rows (one row per beamtime); pure.

    Rows with the same ``id`` are one proposal; each row's ``start``/``end`` (if
    set) is one of its beamtimes. A proposal whose id cannot be used safely
    (:func:`~daas_hub.model.check_proposal_id`) is left out and its error appended to ``unsafe``.
    """
    grouped: dict[str, dict] = {}
    for row in rows:
        pid = str(row["id"])
        p = grouped.setdefault(pid, {"row": row, "beamtimes": []})
        start, end = row.get("start"), row.get("end")
        if start is not None and end is not None:
            p["beamtimes"].append(Beamtime(_dt(start), _dt(end)))
    proposals = []
    for pid, p in grouped.items():
        row = p["row"]
        role = roles.get(str(row.get("role") or "member"), row.get("role") or "member")
        try:
            check_proposal_id(pid)
        except UnsafeValue as e:
            (unsafe if unsafe is not None else []).append(e)
            continue
        proposals.append(Proposal(
            id=pid,
            title=row.get("title") or "",
            instrument=row.get("instrument") or "",
            facility=row.get("facility") or facility,
            state=ProposalState(row.get("state") or "active"),
            members=(Member(account.username, MemberRole(role)),),
            beamtimes=tuple(sorted(set(p["beamtimes"]), key=lambda b: b.start)),
            data=DataLocations(raw=row.get("raw"), processed=row.get("processed")),
        ))
    return proposals


def _dt(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


class SqlProposalSource(ProposalSource):
    """Reads accounts and proposals with two SQL queries the admin writes."""

    url = Unicode(
        "",
        config=True,
        help="""SQLAlchemy database URL, without the password (see ``password_file``).

        Example: ``postgresql+psycopg://daas_reader@uo-db.example.org:5432/useroffice``
        """,
    )

    password = Unicode(
        "",
        config=True,
        help="""The database password. Prefer ``password_file``, which keeps it out
        of configuration files.""",
    )

    password_file = Unicode(
        "",
        config=True,
        help="""File holding the database password (first line), readable only by
        the hub's account. Example: ``/etc/daas-hub/secrets/useroffice-db``""",
    )

    account_query = Unicode(
        "",
        config=True,
        help="""SQL returning at most one row for the identity that signed in, with
        columns ``username`` (required), ``uid``, ``gid``, ``roles`` (array or
        comma-separated), ``display_name``, ``email``. Bind parameters:
        ``:provider`` (``umbrella``, ``facility``...), ``:subject``, ``:username``,
        ``:email``.

        Example: ``SELECT u.login AS username, u.uid, u.gid FROM users u WHERE
        (:provider = 'umbrella' AND u.umbrella_id = :subject) OR u.login = :username``
        """,
    )

    proposals_query = Unicode(
        "",
        config=True,
        help="""SQL returning the account's proposals, one row per beamtime, with
        columns ``id`` and ``title`` (required), ``instrument``, ``state``
        (active/embargoed/archived), ``role`` (the account's role), ``facility``,
        ``start``, ``end``, ``raw``, ``processed``. Bind parameters: ``:username``,
        ``:uid``, ``:email``.

        Example: ``SELECT p.code AS id, p.title, p.beamline AS instrument, m.role
        FROM proposals p JOIN members m ON m.proposal_id = p.id WHERE m.login = :username``
        """,
    )

    role_map = Dict(
        {"principal_investigator": "pi", "PI": "pi", "local_contact": "local-contact"},
        config=True,
        help="""How values of the ``role`` column translate to daas-hub roles
        (``pi``, ``member``, ``local-contact``); values not listed must already be one.""",
    )

    facility = Unicode("", config=True, help="""Facility name set on proposals whose row has no ``facility`` column.""")

    timeout = Float(
        10,
        config=True,
        help="""Seconds a query may take; past this the database is asked to cancel it
        and the lookup counts as a catalogue failure. Example: ``10``.""",
    )

    pool_size = Int(4, config=True, help="""Database connections kept open (and threads running queries).""")

    connect_args = Dict(
        config=True,
        help="""Extra arguments for the database driver's connect call.

        Example: ``{"sslmode": "verify-full", "sslrootcert": "/etc/ssl/uo-ca.pem"}``
        """,
    )

    _engine = None
    _executor = None

    def check(self) -> None:
        if not self.url:
            raise SettingsError("site settings", "proposal_source > url", "no database URL is set",
                                "set the SQLAlchemy URL of the user office database (docs/sources/sql.md)")
        try:
            from sqlalchemy.engine import make_url

            make_url(self.url)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy raises several kinds
            raise SettingsError("site settings", "proposal_source > url", f"not a database URL ({e})",
                                "write it as driver://user@host:port/database (docs/sources/sql.md)") from None
        for name, sql, allowed, needed in (
            ("account_query", self.account_query, ACCOUNT_PARAMS, None),
            ("proposals_query", self.proposals_query, PROPOSAL_PARAMS, "username"),
        ):
            if not sql.strip():
                raise SettingsError("site settings", f"proposal_source > {name}", "the query is missing",
                                    "write it (docs/sources/sql.md has examples)")
            unknown = query_params(sql) - allowed
            if unknown:
                raise SettingsError(
                    "site settings", f"proposal_source > {name}",
                    f"unknown bind parameter(s) {', '.join(':' + u for u in sorted(unknown))}",
                    f"use only {', '.join(':' + a for a in sorted(allowed))}",
                )
            if needed and needed not in query_params(sql) and "uid" not in query_params(sql):
                raise SettingsError("site settings", f"proposal_source > {name}",
                                    "the query does not use the account (:username or :uid)",
                                    "filter the proposals on :username or :uid")
        read_secret(self.password, self.password_file, setting="proposal_source > password_file")

    _engine_secret = None

    def _engine_or_create(self):
        """The connection pool, rebuilt when the password (file) changed: an admin who
        corrects the password needs no hub restart."""
        secret = read_secret(self.password, self.password_file, setting="proposal_source > password_file")
        if self._engine is not None and secret != self._engine_secret:
            self.log.info("The user office database password changed; reconnecting with the new one")
            self._engine.dispose()
            self._engine = None
        if self._engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.engine import make_url

            url = make_url(self.url)
            if secret:
                url = url.set(password=secret)
            connect_args = dict(self.connect_args)
            if url.get_backend_name() == "postgresql":
                ms = int(self.timeout * 1000)
                connect_args.setdefault("options", f"-c statement_timeout={ms}")
                connect_args.setdefault("connect_timeout", max(1, int(self.timeout)))
            self._engine = create_engine(
                url, pool_size=self.pool_size, max_overflow=0, pool_pre_ping=True,
                pool_timeout=self.timeout, connect_args=connect_args,
            )
            self._engine_secret = secret
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="daas-sql")
        return self._engine

    @staticmethod
    def _rows(engine, sql: str, params: dict) -> list[dict]:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        used = query_params(sql)
        try:
            with engine.connect() as conn:
                result = conn.execute(text(sql), {k: v for k, v in params.items() if k in used})
                return [dict(r._mapping) for r in result]
        except SQLAlchemyError as e:
            # the driver's message names the problem; it never contains the password
            raise SourceUnavailable(f"user office database: {str(e.orig or e).splitlines()[0]}") from None

    async def _query(self, sql: str, params: dict, what: str) -> list[dict]:
        engine = self._engine_or_create()
        return await in_thread(self._executor, lambda: self._rows(engine, sql, params), self.timeout + 1,
                               f"the user office database ({what})")

    async def resolve_account(self, identity: Identity) -> Account | None:
        rows = await self._query(self.account_query, {
            "provider": identity.provider, "issuer": identity.issuer, "subject": identity.subject,
            "username": identity.username, "email": identity.email,
        }, "account")
        if not rows:
            return None
        if len({str(r["username"]) for r in rows}) > 1:
            self.log.error("The account query returned %d accounts for %s; refusing to guess", len(rows), identity)
            return None
        return account_from_row(rows[0])

    async def proposals_for(self, account: Account) -> ProposalList:
        rows = await self._query(self.proposals_query, {
            "username": account.username, "uid": account.uid, "email": account.email,
        }, "proposals")
        unsafe: list = []
        proposals = proposals_from_rows(rows, account, self.facility, self.role_map, unsafe)
        for e in unsafe:
            self.log.error("Skipping a proposal of the user office database: its %s", e)
        return ProposalList(proposals)

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._engine = self._executor = None
