"""The hub's one spawner: the proposal-aware form, validation, quotas, and a child per start.

:class:`DaasSpawner` (entry point ``daas``) serves the spawn form, checks every
option (:mod:`daas_hub.options`), then builds a child spawner for the chosen
backend (local processes, Slurm jobs, Kubernetes pods) and forwards start, poll, stop
and progress to it. The child is built lazily and its state is nested under one
key, so a hub restart rebuilds it from the database and finds the session
again (the shape of wrapspawner, without ProfilesSpawner's nesting problems).

Backends plug in by class name (``backend_classes``): a child is any Spawner
that also has ``configure_session(order)`` (:class:`~daas_hub.spawners.common.SessionSetup`).
"""

from __future__ import annotations

import asyncio
import functools
from importlib import resources

import jinja2
from jupyterhub.spawner import Spawner
from jupyterhub.utils import maybe_future, url_path_join
from markupsafe import escape
from tornado import web
from traitlets import Any, Dict, List, Unicode, default, observe, validate
from traitlets.utils.importstring import import_item

from daas_hub.courses import course_of_server
from daas_hub.errors import SettingsError
from daas_hub.options import OptionError, SessionRequest, SpawnContext, validate_options
from daas_hub.profiles import load_catalogue
from daas_hub.quotas import (
    QUOTA_ROLES,
    check_proposal_quotas,
    check_role_quotas,
    ledger,
    quota_role,
    quota_table,
)
from daas_hub.spawn_form import form_context, query_options

from .burst import queue_for, waiting_events
from .common import (
    SessionOrder,
    SessionSetup,
    checked_account,
    policy_for,
    refuse,
    refuse_logged,
    shown_error,
)
from .courses import course_order
from .first_start import lookup_for
from .operations import SessionOperations
from .teams import end_shares

#: attributes the hub sets on its spawner during a spawn, which the child needs too
FORWARDED = ("api_token", "port", "admin_access", "cert_paths")

#: JupyterHub Spawner settings only the backend's spawner reads (the hub never reads them from
#: DaasSpawner): set as ``c.DaasSpawner.<name>`` they would do nothing
BACKEND_SETTINGS = ("args", "cmd", "environment", "env_keep", "notebook_dir", "default_url", "disable_user_config",
                    "mem_limit", "mem_guarantee", "cpu_limit", "cpu_guarantee")


def misplaced_backend_settings(config) -> list[str]:
    """The :data:`BACKEND_SETTINGS` a site set on ``c.DaasSpawner`` (a traitlets Config), sorted."""
    section = config["DaasSpawner"] if "DaasSpawner" in config else {}
    return sorted(name for name in BACKEND_SETTINGS if name in section)


def misplaced_backend_settings_message(names: list[str]) -> str:
    settings = ", ".join(f"c.DaasSpawner.{n}" for n in names)
    return (f"{settings} {'is' if len(names) == 1 else 'are'} set but do{'es' if len(names) == 1 else ''} nothing: "
            f"each start runs the backend's own spawner, which reads its own class's settings. Set "
            f"c.Spawner.{names[0]} (every backend) or c.LocalSpawner.{names[0]} / c.SlurmSpawner.{names[0]} / "
            f"c.KubeSessionSpawner.{names[0]} instead (docs/spawner.md).")


#: how long the hub waits for a start, the start queue included (a day: waiting never fails a start)
QUEUE_WAIT = 24 * 3600


def _options_applied_by_start(spawner, user_options) -> None:
    """Options are checked and applied by ``DaasSpawner.start`` (:func:`daas_hub.options.validate_options`);
    JupyterHub's own hook has nothing left to do (and no longer logs them as unhandled)."""


def option_refusal(e: OptionError) -> str:
    """What a person reads when an option is refused: which, why, what is allowed, what to do."""
    return f"Not started: {e}. Change it in the form and start again."


@functools.lru_cache(maxsize=8)
def _catalogue(path: str, enabled: tuple[str, ...]):
    catalogue = load_catalogue(path or None)
    if enabled:
        catalogue = catalogue.select(list(enabled), entry="DaasSpawner.profiles_enabled",
                                     settings_file="jupyterhub_config.py")
    return catalogue


@functools.lru_cache(maxsize=1)
def _form_template() -> jinja2.Template:
    text = resources.files("daas_hub").joinpath("templates/options_form.html").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=True)
    return env.from_string(text)


class DaasSpawner(SessionOperations, Spawner):
    """One form, checked options, one child spawner per start."""

    backend_classes = Dict(
        {
            "local": "daas_hub.spawners.local.LocalSpawner",
            "slurm": "daas_hub.spawners.slurm.SlurmSpawner",
            "kubernetes": "daas_hub.spawners.kubernetes.KubeSessionSpawner",
        },
        config=True,
        help="""The child spawner class for each backend name, as an import path.

        A child is a Spawner with ``configure_session(order)``; a site's own
        backend plugs in the same way: ``{"nomad": "mysite.spawners.NomadSession"}``.

        .. versionadded:: 0.1
        """,
    )

    backends = List(
        Unicode(),
        ["local"],
        config=True,
        help="""The backends users may choose in the form, preferred (default) first.

        Each must be a key of ``backend_classes`` and is offered only with the
        profiles that list it. Example: ``["slurm", "local"]``

        .. versionadded:: 0.1
        """,
    )

    profile_catalogue = Unicode(
        "",
        config=True,
        help="""Path of the technique profile catalogue (docs/profiles.md); empty: the packaged one.""",
    )

    profiles_enabled = List(
        Unicode(),
        config=True,
        help="""Profile slugs offered, in form order; empty: every profile of the catalogue.""",
    )

    role_quotas = Dict(
        config=True,
        help="""Quota per role: ``{role: {sessions, cpu, memory, gpu, hours}}``, summed over a
        user's live sessions (named servers). Roles: user, staff, instructor, training;
        a person gets the first of staff, instructor, training their account has, else user.
        Keys left out keep the built-in value. Example:
        ``{"user": {"sessions": 2, "cpu": 8, "memory": "32G", "gpu": 0, "hours": 12}}``

        .. versionadded:: 0.1
        """,
    )

    proposal_quotas = Dict(
        config=True,
        help="""Extra quota per proposal id, applied to each user's sessions on that proposal,
        on top of the role quota. Example: ``{"MX-1001": {"gpu": 0, "sessions": 1}}``

        .. versionadded:: 0.1
        """,
    )

    @property
    def policy(self):
        """The login's policy (:func:`~daas_hub.spawners.common.policy_for`)."""
        return policy_for(self.authenticator, self.log)

    @property
    def contact(self) -> str:
        return self.policy.contact

    @default("start_timeout")
    def _default_start_timeout(self):
        return 300  # a batch job may wait in the queue

    @default("http_timeout")
    def _default_http_timeout(self):
        return 120  # a session on a busy machine or node (the local backend waits for its own server)

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _options_applied_by_start

    @default("options_form")
    def _default_options_form(self):
        return DaasSpawner.render_options_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._options_from_form

    # -- settings, checked when loaded (a typo names the setting), parsed once
    @validate("backends")
    def _check_backends(self, proposal):
        unknown = [b for b in proposal.value if b not in self.backend_classes]
        if unknown or not proposal.value:
            raise ValueError(
                f"DaasSpawner.backends lists {unknown or 'nothing'}; every entry must be a key of "
                f"DaasSpawner.backend_classes ({', '.join(self.backend_classes)})"
            )
        return proposal.value

    @validate("role_quotas")
    def _check_role_quotas(self, proposal):
        check_role_quotas(proposal.value)
        return proposal.value

    @validate("proposal_quotas")
    def _check_proposal_quotas(self, proposal):
        check_proposal_quotas(proposal.value)
        return proposal.value

    @validate("profiles_enabled")
    def _check_profiles_enabled(self, proposal):
        # config loads under hold_trait_notifications: profile_catalogue is already set here
        try:
            _catalogue(self.profile_catalogue, tuple(proposal.value))
        except SettingsError as e:
            raise ValueError(f"DaasSpawner.profiles_enabled: {e.problem}; {e.fix}") from None
        return proposal.value

    @observe("role_quotas", "proposal_quotas")
    def _quotas_changed(self, change):
        self._quota_table = None

    _quota_table = None

    @property
    def quotas(self):
        """The quota settings, parsed once (:class:`daas_hub.quotas.QuotaTable`)."""
        if self._quota_table is None:
            self._quota_table = quota_table(self.role_quotas, self.proposal_quotas)
        return self._quota_table

    # -- state: the child's own, nested under one key
    child_backend = Unicode("")
    child_state = Dict()
    session_options = Dict()  # the checked request, canonical form (SessionRequest.to_options)
    child_spawner = Any(None)

    def __init__(self, **kwargs):
        # the hub's constructor arguments (user, orm_spawner, hub, db session...) build the child
        self._child_kwargs = {k: v for k, v in kwargs.items() if k != "user_options"}
        super().__init__(**kwargs)
        misplaced = misplaced_backend_settings(self.config)
        if misplaced and not DaasSpawner._misplaced_warned:
            DaasSpawner._misplaced_warned = True  # once per hub process, not per user
            self.log.warning(misplaced_backend_settings_message(misplaced))

    _misplaced_warned = False

    def load_state(self, state):
        super().load_state(state)
        self.child_backend = state.get("backend", "")
        self.child_state = state.get("child", {})
        self.session_options = state.get("request", {})
        self.ops_load_state(state)
        if self.child_spawner is not None:
            self.child_spawner.load_state(self.child_state)

    def get_state(self):
        state = super().get_state()
        if self.child_spawner is not None:
            self.child_state = self.child_spawner.get_state()
        if self.child_backend:
            state["backend"] = self.child_backend
            state["child"] = self.child_state
            state["request"] = self.session_options
            self.ops_get_state(state)
        return state

    def clear_state(self):
        super().clear_state()
        if self.child_spawner is not None:
            self.child_spawner.clear_state()
        self.child_spawner = None
        self.child_backend = ""
        self.child_state = {}
        self.session_options = {}
        self.ops_clear()

    @observe(*FORWARDED)
    def _forward(self, change):
        if self.child_spawner is not None:
            setattr(self.child_spawner, change.name, change.new)

    def _backend_class(self, backend: str):
        try:
            return import_item(self.backend_classes[backend])
        except (KeyError, ImportError) as e:
            raise refuse_logged(
                self.log, f'The backend "{backend}" is not available on this hub. Contact {self.contact}.',
                detail=f"cannot load the {backend!r} backend class: {type(e).__name__}: {e}", reason="backend",
                status_code=400,
            ) from None

    def construct_child(self, backend: str):
        """Build (once) the child spawner for ``backend``, restoring its saved state."""
        if self.child_spawner is not None and self.child_backend == backend:
            return self.child_spawner
        cls = self._backend_class(backend)
        child = cls(**{**self._child_kwargs, "config": self.config, "user_options": {}})
        child.clear_state()  # a fresh child, not whatever the hub passed to us
        if self.child_backend == backend and self.child_state:
            child.load_state(self.child_state)
        for name in FORWARDED:
            if name in self.trait_names() and name in child.trait_names():
                setattr(child, name, getattr(self, name))
        self.child_backend = backend
        self.child_spawner = child
        return child

    # -- what the person runs and may ask for
    def live_requests(self, *, others_only: bool) -> list[tuple[str, SessionRequest]]:
        """The user's live sessions as (server name, request); a malformed stored request is logged, skipped."""
        out = []
        for name, sp in self.user.spawners.items():
            if others_only and (sp is self or name == self.name):
                continue
            if course_of_server(name):  # counted in the course's quota (daas_hub.courses)
                continue
            opts = getattr(sp, "session_options", None)
            if not sp.active or not opts:
                continue
            try:
                out.append((name, SessionRequest.from_options(opts)))
            except ValueError as e:
                self.log.warning("Server %s has an unreadable stored request (%s); not counted", sp._log_name, e)
        return out

    async def spawn_context(self) -> SpawnContext:
        account, proposals = await checked_account(
            self.user, self.policy, status_code=403, lookup=lookup_for(self.authenticator), log=self.log,
            manage_groups=self.authenticator.manage_groups,
        )
        return SpawnContext(
            account=account,
            proposals=tuple(proposals),
            catalogue=_catalogue(self.profile_catalogue, tuple(self.profiles_enabled)),
            backends=tuple(self.backends),
            quota=self.quotas.for_roles(account.roles),
            proposal_quotas=self.quotas.proposal_quotas(account.roles),
            others=tuple(r for _, r in self.live_requests(others_only=True)),
            staff_without_proposal=self.policy.staff_without_proposal,
        )

    async def check_options(self, raw) -> tuple[SessionRequest, SpawnContext]:
        ctx = await self.spawn_context()
        if isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k != "_xsrf"}
        try:
            return validate_options(raw, ctx), ctx
        except OptionError as e:
            raise refuse(option_refusal(e), reason="options") from None

    async def _options_from_form(self, form_data):
        request, _ = await self.check_options(form_data)
        return request.to_options()

    async def options_from_query(self, query_data):
        return await self._options_from_form(query_data)

    # -- the form
    async def login_guard(self) -> None:
        """The login's spawn guard (conditions of use), before the form is shown.

        JupyterHub calls ``Authenticator.pre_spawn_start`` only when a server
        starts; the form calls it here, once, so a person who may not start
        (conditions not accepted) sees the login's refusal instead of a form.
        """
        await maybe_future(self.authenticator.pre_spawn_start(self.user, self))

    def _last_choice(self) -> dict:
        """This server's last options, else those of any other server of the user."""
        if self.orm_spawner is not None and self.orm_spawner.user_options:
            return dict(self.orm_spawner.user_options)
        for sp in self.user.spawners.values():
            if sp is not self and getattr(sp, "orm_spawner", None) is not None and sp.orm_spawner.user_options:
                return dict(sp.orm_spawner.user_options)
        return {}

    def cluster_figures(self):
        """What the first enabled batch backend last said is free (cached; never waits), or None."""
        for backend in self.backends:
            try:
                cls = self._backend_class(backend)
            except web.HTTPError:
                continue
            figures = getattr(cls, "cluster_figures", None)
            if figures is not None:
                return figures(self.config, self.log)
        return None

    async def render_options_form(self) -> str:
        if course_of_server(self.name):
            return ""  # a course session: the course decides everything
        try:
            await self.login_guard()
            ctx = await self.spawn_context()
        except Exception as e:  # noqa: BLE001 - one way to log and show: never a 500, never str(e)
            message = shown_error(e, log=self.log, server=self._log_name, doing="Preparing the form",
                                  contact=self.contact)
            return f'<p class="alert alert-danger">{escape(message)}</p>'
        handler = getattr(self, "handler", None)
        context = form_context(
            ctx, last=self._last_choice(),
            query=query_options(handler.request.query_arguments) if handler is not None else {},
            cluster=self.cluster_figures(),
            quota_url=url_path_join(self.hub.base_url if self.hub else "/hub/", "quota"),
        )
        return _form_template().render(**context)

    async def quota_summary(self) -> dict:
        """For the quota page: the role, the quota, what every live session uses and what is left."""
        ctx = await self.spawn_context()
        live = self.live_requests(others_only=False)
        book = ledger(ctx.quota, (r for _, r in live))
        return {
            "role": quota_role(ctx.account.roles),
            "roles": QUOTA_ROLES,
            "quota": book.quota,
            "used": book.used,
            "left": book.left,
            "proposal_quotas": ctx.proposal_quotas,
            "sessions": [{"server": name or "(default)", **r.to_options()} for name, r in live],
        }

    # -- lifecycle, forwarded to the child
    _queue = None
    _ticket = None

    def start(self):
        """Start the session; waiting in the hub's start queue never fails it.

        JupyterHub bounds ``start()`` by ``start_timeout``, read right after this call:
        the hub waits as long as the queue takes (:data:`QUEUE_WAIT`), and the
        configured ``start_timeout`` bounds the backend's own start, from its turn on.
        """
        bound = self.start_timeout
        self.start_timeout = QUEUE_WAIT
        return self._start(bound)

    async def _start(self, bound: int):
        try:
            if course_of_server(self.name):
                order = await course_order(self, _catalogue(self.profile_catalogue, tuple(self.profiles_enabled)),
                                           self.backends)
            else:
                request, ctx = await self.check_options(self.user_options or {})
                order = SessionOrder(request, ctx.catalogue.get(request.profile), ctx.account, ctx.proposals)
            request = order.request
            if self.child_spawner is not None and self.child_backend != request.backend:
                self.child_spawner = None
                self.child_state = {}
            child = self.construct_child(request.backend)
            self.session_options = request.to_options()
            child.configure_session(order)
            self._queue = queue_for(request.backend, child.start_slots if isinstance(child, SessionSetup) else 0)
            self._ticket = ticket = self._queue.join(self._log_name)
            try:
                if ticket.waiting:
                    self.log.info("%s waits its turn to start: number %d of %d", self._log_name,
                                  self._queue.position(ticket), self._queue.waiting)
                    await ticket.admitted
                self.log.info("Starting %s: %s", self._log_name,
                              ", ".join(f"{k}={v}" for k, v in self.session_options.items()))
                self.ops_requested(request)  # the usage record and the spawn-start log line
                return await asyncio.wait_for(self._child_start(child, request), bound)
            finally:
                self._queue.leave(ticket)
        finally:
            self.start_timeout = bound

    async def _child_start(self, child, request):
        backend = request.backend
        try:
            url = await child.start()
        except web.HTTPError as e:
            self.ops_spawned(request, reason=getattr(e, "reason", None) or "refused")
            raise
        except (TimeoutError, asyncio.CancelledError) as e:
            self.ops_spawned(request, reason="timeout" if isinstance(e, TimeoutError) else "cancelled")
            raise
        except Exception as e:
            self.ops_spawned(request, reason="backend-error")
            message = shown_error(e, log=self.log, server=self._log_name,
                                  doing=f"Starting the session on {backend}", contact=self.contact)
            raise refuse(message, reason="backend-error", status_code=500) from None
        self.ops_spawned(request)
        return url

    def _existing_child(self):
        if self.child_spawner is not None:
            return self.child_spawner
        if self.child_backend:
            return self.construct_child(self.child_backend)
        return None

    async def poll(self):
        child = self._existing_child()
        if child is None:
            return 0
        status = await child.poll()
        if self.ops_over(status):  # its hours are over (docs/operations.md#lifetimes)
            await self.stop(now=True)
            return 0
        return status

    async def stop(self, now=False):
        child = self._existing_child()
        if child is not None:
            await child.stop(now=now)
        end_shares(self)  # a share ends with its session (docs/teams.md)
        self.ops_stopped()

    async def progress(self):
        for _ in range(60):  # the child appears once the options are checked
            if self.child_spawner is not None:
                break
            await asyncio.sleep(0.5)
        else:
            return
        if self._ticket is not None:
            async for event in waiting_events(self._queue, self._ticket):
                yield event
        async for event in self.child_spawner.progress():
            self.ops_progress(event.get("message", "") if isinstance(event, dict) else "")
            yield event
