"""Identity -> facility account -> proposals, for every authenticator.

Authenticators own one :class:`ProposalMapping` (composition, not inheritance) and
call it from their hooks: :meth:`ProposalMapping.auth_model` when someone signs
in, :meth:`ProposalMapping.refresh` from ``refresh_user``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from tornado import web
from traitlets import Bool, HasTraits, Instance, Set, Type, Unicode, default
from traitlets.config import LoggingConfigurable

from daas_hub.access import (
    STATE_KEY,
    LoginPolicy,
    ProposalLookup,
    make_auth_state,
    proposal_groups,
    read_auth_state,
)
from daas_hub.course_book import CourseBook
from daas_hub.courses import open_course_of
from daas_hub.errors import SourceUnavailable
from daas_hub.model import Identity, Provider, UnsafeValue
from daas_hub.sources import ProposalSource, YamlProposalSource, is_stale
from daas_hub.spawners.operations import TimedSource


class ProposalMapping(LoggingConfigurable):
    """Maps a signed-in identity to a facility account and its proposals."""

    source_class = Type(
        YamlProposalSource,
        klass=ProposalSource,
        config=True,
        help="""The proposal source: where accounts and proposals are read.

        Example: ``c.ProposalMapping.source_class = "daas_hub.sources.YamlProposalSource"``
        (configure it with ``c.YamlProposalSource.path``).
        """,
    )

    facility_name = Unicode(
        "the facility",
        config=True,
        help="""The facility's name, as shown to users in messages.

        Example: ``"ESRF"``
        """,
    )

    contact = Unicode(
        "the facility's user office",
        config=True,
        help="""Whom users should contact about access, as shown in refusal messages.

        Example: ``"the User Office (useroffice@example.org)"``
        """,
    )

    staff_without_proposal = Bool(
        True,
        config=True,
        help="""Let accounts with the staff or admin role have sessions without a proposal.""",
    )

    admin_roles = Set(
        {"admin"},
        config=True,
        help="""Account roles that make a user a JupyterHub admin.

        Example: ``{"admin"}``; an empty set leaves admin rights to ``Authenticator.admin_users``.
        """,
    )

    courses = Instance(CourseBook, help="The hub's training courses (docs/instructors.md).")

    @default("courses")
    def _default_courses(self):
        return CourseBook(parent=self)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.source = self.source_class(parent=self)

    def _decide(self, account, proposals, *, who: str):
        """The policy's decision; a participant of an open course needs no proposal."""
        decision = self.policy.decide(account, proposals, who=who)
        if not decision.allowed and decision.reason == "no-proposal" and open_course_of(
                self.courses.courses(), account.username, self.courses.now(), warm_up=self.courses.warm_up_delta):
            return replace(decision, allowed=True, reason="course", message="")
        return decision

    @property
    def lookups(self) -> TimedSource:
        """The source, its lookups timed and counted for /hub/metrics (docs/operations.md#metrics)."""
        return TimedSource(self.source)

    @property
    def policy(self) -> LoginPolicy:
        """These settings as the frozen value the spawners receive."""
        return LoginPolicy(
            facility_name=self.facility_name, contact=self.contact,
            staff_without_proposal=self.staff_without_proposal,
        )

    def check(self) -> None:
        """Check the source's configuration (raises SettingsError)."""
        self.source.check()

    def _refuse(self, message: str, reason: str) -> web.HTTPError:
        err = web.HTTPError(403, "login refused (%s)", reason, reason="Forbidden")
        err.jupyterhub_message = message
        return err

    async def auth_model(
        self, identity: Identity, *, name: str | None = None, who: str | None = None,
        idp_roles: frozenset[str] = frozenset(),
    ) -> dict:
        """The auth model for ``identity`` signing in.

        The hub user is named ``name``, or (None) after the facility account the
        identity is linked to. ``idp_roles`` are roles the identity provider
        grants (staff, admin, instructor from its claims), added to the account's.

        Raises an HTTP 403 whose message says why and whom to contact when the
        person may not have a session, and 503 when the catalogue does not answer.
        """
        who = who or identity.email or identity.username or identity.subject
        try:
            account = await self.lookups.resolve_account(identity)
            if account is not None and idp_roles:
                account = replace(account, roles=account.roles | idp_roles)
            proposals = await self.lookups.proposals_for(account) if account else []
        except SourceUnavailable as e:
            self.log.error("Proposal source unavailable during login of %s: %s", name or who, e)
            err = web.HTTPError(503, "proposal source unavailable", reason="Service Unavailable")
            err.jupyterhub_message = (
                f"The proposal catalogue of {self.facility_name} did not answer, so we cannot "
                f"tell which proposals you are on. Please try again in a few minutes; if it "
                f"persists, contact {self.contact}."
            )
            raise err from None
        except UnsafeValue as e:
            self.log.error("Refusing the login of %s: the catalogue's %s", who, e)
            raise self._refuse(unsafe_account_message(self.facility_name, self.contact), "unsafe-username") from None
        if account is not None and account.username != hub_name(account.username):
            self.log.error("Refusing %s: account %r is not a hub name (hub names are lower case)", who, account.username)
            raise self._refuse(unsafe_account_message(self.facility_name, self.contact), "username-case")
        decision = self._decide(account, proposals, who=who)
        if not decision.allowed:
            self.log.info("Refusing %s: %s", name or who, decision.reason)
            raise self._refuse(decision.message, decision.reason)
        stale = is_stale(proposals)
        if stale:
            self.log.warning("Signing in %s with the last known proposals (catalogue unavailable)", name or who)
        return {
            "name": name or account.username,
            "admin": self._admin(account),
            "groups": proposal_groups(proposals, account.username),
            "auth_state": _with_idp_roles(make_auth_state(account, proposals, stale=stale), idp_roles),
            "user_info": user_info(account),
        }

    def _admin(self, account) -> bool | None:
        """Admin from the account's roles; None leaves it to Authenticator.admin_users."""
        if not self.admin_roles:
            return None
        return bool(account.roles & self.admin_roles)

    async def lookup(self, name: str) -> dict | None:
        """The auth data of hub user ``name``, read from the source, for a start before
        they ever signed in (an admin's or instructor's start, the REST API).

        The account is found as a refresh finds it (the facility username ``name``).
        Returns ``{"auth_state": ..., "groups": [...]}`` (no access decision: the
        spawner applies the policy), or None when ``name`` is no account of the
        facility or not one the hub can use safely. Raises
        :class:`~daas_hub.errors.SourceUnavailable` when the catalogue does not answer.
        Admin rights are never granted here: they follow the person's own login.
        """
        try:
            account = await self.source.resolve_account(
                Identity(provider=Provider.FACILITY, subject=name, username=name)
            )
            if account is None:
                return None
            if account.username != hub_name(account.username) or account.username != name:
                self.log.error("No start for %s before they sign in: the catalogue's account is %r",
                               name, account.username)
                return None
            proposals = await self.source.proposals_for(account)
        except UnsafeValue as e:
            self.log.error("No start for %s before they sign in: the catalogue's %s", name, e)
            return None
        stale = is_stale(proposals)
        if stale:
            self.log.warning("Starting for %s with the last known proposals (catalogue unavailable)", name)
        return {
            "auth_state": make_auth_state(account, proposals, stale=stale),
            "groups": proposal_groups(proposals, account.username),
        }

    async def refresh(self, auth_state: dict | None, *, name: str) -> dict | bool:
        """New auth data for ``refresh_user``.

        Returns an auth model update, ``False`` if the person must sign in again
        (e.g. removed from every proposal: the login then says why), or the last
        known state marked stale when the catalogue does not answer.
        """
        known = read_auth_state(auth_state)
        if known is None:
            return False
        account, last = known
        if self.courses.is_temporary(name):  # a course's temporary account: until the course ends
            return self.courses.temporary_course(name) is not None
        idp_roles = frozenset(auth_state[STATE_KEY].get("idp_roles", ()))
        try:
            fresh = await self.lookups.resolve_account(
                Identity(provider=Provider.FACILITY, subject=account.username, username=account.username)
            )
            if fresh is not None and idp_roles:
                fresh = replace(fresh, roles=fresh.roles | idp_roles)
            proposals = await self.lookups.proposals_for(fresh) if fresh else []
        except UnsafeValue as e:
            self.log.error("Signing %s out: the catalogue's %s", name, e)
            return False
        except SourceUnavailable as e:
            self.log.warning("Proposal source unavailable; keeping %s's last known proposals: %s", name, e)
            # keep the time the proposals were last read: the hub's home page shows it
            fetched_at = auth_state[STATE_KEY].get("fetched_at")
            then = datetime.fromisoformat(fetched_at) if fetched_at else None
            stale = make_auth_state(account, last, stale=True, now=then)
            return {"auth_state": {**auth_state, **_with_idp_roles(stale, idp_roles)}}
        decision = self._decide(fresh, proposals, who=name)
        if not decision.allowed:
            return False
        model = {
            "auth_state": _with_idp_roles(
                make_auth_state(fresh, proposals, stale=is_stale(proposals)), idp_roles
            ),
            "groups": proposal_groups(proposals, fresh.username),
            "user_info": user_info(fresh),
        }
        if self._admin(fresh) is not None:
            model["admin"] = self._admin(fresh)
        return model


def user_info(account) -> dict:
    """What JupyterHub shows of a person (its ``user_info``): the catalogue's display name, which
    sessions give JupyterLab, so collaborators see each other by name (docs/teams.md)."""
    name = account.display_name or account.username
    initials = "".join(w[0] for w in name.split()[:2] if w[0].isalnum()).upper() or account.username[:1].upper()
    return {"display_name": name, "initials": initials}  # no "name": logs keep the account name


def hub_name(username: str) -> str:
    """The hub user name for a facility username (JupyterHub lower-cases names)."""
    return username.lower()


def unsafe_account_message(facility: str, contact: str) -> str:
    """What a person reads when their facility account name cannot be used safely."""
    return (
        f"Your account at {facility} has a name this hub cannot use safely (it has capital "
        f"letters, which the hub cannot tell apart from another account's, or characters a file "
        f"or account name cannot hold), so you are not signed in and nothing was changed. "
        f"Please ask {contact} to check your account name."
    )


def _with_idp_roles(auth_state: dict, idp_roles: frozenset[str]) -> dict:
    """Remember the provider-granted roles, so that a refresh keeps them."""
    if idp_roles:
        auth_state[STATE_KEY]["idp_roles"] = sorted(idp_roles)
    return auth_state


class ProposalLogin(HasTraits):
    """Defaults every daas-hub login shares; mix in before the JupyterHub authenticator.

    Who may sign in is decided by the proposal mapping, not by a user list, so
    ``allow_all`` defaults to True; accounts and proposals live in encrypted
    ``auth_state``; one group per proposal; proposals are re-read before a spawn
    and every ``auth_refresh_age`` seconds. The login's :class:`LoginPolicy` is
    published as ``login_policy`` for the spawners.
    """

    mapping = Instance(ProposalMapping)

    @default("mapping")
    def _default_mapping(self):
        return ProposalMapping(parent=self)

    @default("enable_auth_state")
    def _default_enable_auth_state(self):
        return True

    @default("manage_groups")
    def _default_manage_groups(self):
        return True

    @default("allow_all")
    def _default_allow_all(self):
        return True

    @default("refresh_pre_spawn")
    def _default_refresh_pre_spawn(self):
        return True

    @default("auth_refresh_age")
    def _default_auth_refresh_age(self):
        return 300  # proposals re-read from the catalogue every five minutes

    @property
    def login_policy(self) -> LoginPolicy:
        """Published for the spawners (:func:`daas_hub.spawners.common.policy_for`)."""
        return self.mapping.policy

    @property
    def course_book(self) -> CourseBook:
        """Published for the course pages and the spawner (:mod:`daas_hub.spawners.courses`)."""
        return self.mapping.courses

    def check_allow_config(self):
        super().check_allow_config()
        if self.mapping.courses.enabled and self.parent is not None:
            from daas_hub.spawners.courses import start_cleanup  # the hub side: stops and removes

            start_cleanup(self.parent, self.mapping.courses)

    @property
    def proposal_lookup(self) -> ProposalLookup:
        """Published for the spawners: the auth data of a hub user who has not signed in
        yet (:meth:`ProposalMapping.lookup`; :func:`daas_hub.spawners.first_start.lookup_for`)."""
        return self.mapping.lookup
