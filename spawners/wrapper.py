"""The hub's one spawner: the proposal-aware form, validation, quotas, and a child per start.

:class:`DaasSpawner` (entry point ``daas``) serves the spawn form, checks every
option (:mod:`daas_hub.options`), then builds a child spawner for the chosen
backend (local, Slurm, and the Kubernetes seam) and forwards start, poll, stop
and progress to it. The child is built lazily and its state is nested under one
key, so a hub restart rebuilds it from the database and finds the session
again (the shape of wrapspawner, without ProfilesSpawner's nesting problems).

Backends plug in by class name (``backend_classes``): a child is any Spawner
that also has ``configure_session(order)`` (:class:`~daas_hub.spawners.common.SessionSetup`).
"""

from __future__ import annotations

import asyncio
import functools
import os
from importlib import resources

import jinja2
from jupyterhub.spawner import Spawner
from jupyterhub.utils import maybe_future, url_path_join
from markupsafe import escape
from tornado import web
from traitlets import Any, Dict, List, Unicode, default, observe, validate
from traitlets.utils.importstring import import_item

from daas_hub.options import (
    NO_PROPOSAL,
    OPTION_NAMES,
    OptionError,
    SessionRequest,
    SpawnContext,
    validate_options,
)
from daas_hub.profiles import load_catalogue
from daas_hub.quotas import DEFAULT_ROLE_QUOTAS, GIB, QUOTA_ROLES, Quota, available, quota_role, total

from .common import SessionOrder, checked_account, login_policy, refuse

try:  # the Slurm backend must replace batchspawner's port handler before the hub builds its routes
    from . import slurm as _slurm  # noqa: F401
except ImportError:  # pragma: no cover - batchspawner not installed: no Slurm backend
    _slurm = None

DOCS = "docs/spawner.md"

#: attributes the hub sets on its spawner during a spawn, which the child needs too
FORWARDED = ("api_token", "port", "admin_access", "cert_paths")


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


def _plain(value):
    """A user_options value as one string (forms send lists)."""
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


class DaasSpawner(Spawner):
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

    def _policy(self):
        return login_policy(self.authenticator)

    @property
    def contact(self) -> str:
        return self._policy()[1]

    @default("start_timeout")
    def _default_start_timeout(self):
        return 300  # a batch job may wait in the queue

    @default("options_form")
    def _default_options_form(self):
        return DaasSpawner.render_options_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._options_from_form

    @validate("backends")
    def _check_backends(self, proposal):
        unknown = [b for b in proposal.value if b not in self.backend_classes]
        if unknown or not proposal.value:
            raise ValueError(
                f"DaasSpawner.backends lists {unknown or 'nothing'}; every entry must be a key of "
                f"DaasSpawner.backend_classes ({', '.join(self.backend_classes)})"
            )
        return proposal.value

    # -- state: the child's own, nested under one key
    child_backend = Unicode("")
    child_state = Dict()
    session_options = Dict()  # the checked request, canonical form
    child_spawner = Any(None)

    def __init__(self, **kwargs):
        # the hub's constructor arguments (user, orm_spawner, hub, db session...) build the child
        self._child_kwargs = {k: v for k, v in kwargs.items() if k != "user_options"}
        super().__init__(**kwargs)

    def load_state(self, state):
        super().load_state(state)
        self.child_backend = state.get("backend", "")
        self.child_state = state.get("child", {})
        self.session_options = state.get("request", {})
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
        return state

    def clear_state(self):
        super().clear_state()
        if self.child_spawner is not None:
            self.child_spawner.clear_state()
        self.child_spawner = None
        self.child_backend = ""
        self.child_state = {}
        self.session_options = {}

    @observe(*FORWARDED)
    def _forward(self, change):
        if self.child_spawner is not None:
            setattr(self.child_spawner, change.name, change.new)

    def construct_child(self, backend: str):
        """Build (once) the child spawner for ``backend``, restoring its saved state."""
        if self.child_spawner is not None and self.child_backend == backend:
            return self.child_spawner
        try:
            cls = import_item(self.backend_classes[backend])
        except (KeyError, ImportError) as e:
            raise refuse(
                f'The backend "{backend}" is not available on this hub ({e}). Contact {self.contact}.',
                reason="backend",
            ) from None
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

    # -- what the person may ask for
    def _quota_for(self, roles) -> Quota:
        role = quota_role(roles)
        written = {**DEFAULT_ROLE_QUOTAS, **self.role_quotas}
        fallback = Quota.from_dict(DEFAULT_ROLE_QUOTAS[role], where=f"built-in quota {role}")
        return Quota.from_dict(written.get(role, {}), fallback=fallback, where=f"DaasSpawner.role_quotas.{role}")

    def _other_sessions(self) -> tuple[SessionRequest, ...]:
        out = []
        for name, sp in self.user.spawners.items():
            if sp is self or name == self.name or not sp.active:
                continue
            opts = getattr(sp, "session_options", None) or {}
            if not opts:
                continue
            try:
                out.append(SessionRequest(
                    proposal=None if opts["proposal"] == NO_PROPOSAL else opts["proposal"],
                    profile=opts["profile"], backend=opts["backend"], cpu=int(opts["cpu"]),
                    memory=int(float(opts["memory"]) * GIB), gpu=int(opts["gpu"]), hours=float(opts["hours"]),
                ))
            except (KeyError, TypeError, ValueError):
                self.log.warning("Server %s has unreadable session options; not counted", sp._log_name)
        return tuple(out)

    async def spawn_context(self) -> tuple[SpawnContext, object, list]:
        account, proposals = await checked_account(self, status_code=403)
        staff_without_proposal = self._policy()[2]
        proposal_quotas = {}
        for pid, q in self.proposal_quotas.items():
            proposal_quotas[pid] = Quota.from_dict(q, fallback=self._quota_for(account.roles),
                                                   where=f"DaasSpawner.proposal_quotas.{pid}")
        ctx = SpawnContext(
            account=account,
            proposals=tuple(proposals),
            catalogue=_catalogue(self.profile_catalogue, tuple(self.profiles_enabled)),
            backends=tuple(self.backends),
            quota=self._quota_for(account.roles),
            proposal_quotas=proposal_quotas,
            others=self._other_sessions(),
            staff_without_proposal=staff_without_proposal,
        )
        return ctx, account, proposals

    async def check_options(self, raw) -> tuple[SessionRequest, SpawnContext, object, list]:
        ctx, account, proposals = await self.spawn_context()
        if isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k != "_xsrf"}
        try:
            return validate_options(raw, ctx), ctx, account, proposals
        except OptionError as e:
            raise refuse(f"Not started: {e}. (See {DOCS}.)", reason="options") from None

    async def _options_from_form(self, form_data):
        request, *_ = await self.check_options(form_data)
        return request.to_options()

    async def options_from_query(self, query_data):
        return await self._options_from_form(query_data)

    # -- the form
    def _prefill(self, ctx: SpawnContext) -> dict:
        """Defaults, overridden by the last choice, overridden by a permalink's query."""
        values = dict(ctx.defaults())
        last = dict(self.orm_spawner.user_options or {}) if self.orm_spawner is not None else {}
        if not last:
            for sp in self.user.spawners.values():
                if sp is not self and getattr(sp, "orm_spawner", None) is not None and sp.orm_spawner.user_options:
                    last = dict(sp.orm_spawner.user_options)
        handler = getattr(self, "handler", None)
        query = {}
        if handler is not None:
            for key, vals in handler.request.query_arguments.items():
                name = key[4:] if key.startswith("opt-") else key
                if name in OPTION_NAMES and vals:
                    query[name] = vals[-1].decode("utf8", "replace")
        for source in (last, query):
            for name in OPTION_NAMES:
                value = _plain(source.get(name))
                if value is not None:
                    values[name] = value
        return values

    async def render_options_form(self) -> str:
        try:
            # the login's own spawn guard (e.g. conditions of use) first: no form for who may not start
            await maybe_future(self.authenticator.pre_spawn_start(self.user, self))
            ctx, account, _ = await self.spawn_context()
        except Exception as e:  # noqa: BLE001 - shown in the form, never a 500
            return f'<p class="alert alert-danger">{escape(getattr(e, "jupyterhub_message", str(e)))}</p>'
        quota, used = ctx.quota, ctx.used()
        left = available(quota, used)
        proposals = [{"id": p.id, "title": p.title, "instrument": p.instrument}
                     for p in ctx.selectable_proposals()]
        profiles = []
        for p in ctx.catalogue.profiles:
            backends = ctx.backends_for(p)
            if not backends:
                continue
            profiles.append({
                "slug": p.slug, "name": p.name, "description": p.description,
                "instruments": list(p.instruments), "backends": backends,
                "default": {"cpu": int(p.default.cpu), "memory": p.default.memory / GIB,
                            "gpu": p.default.gpu, "hours": p.default.hours},
                "max": {"cpu": int(p.max.cpu), "memory": p.max.memory / GIB, "gpu": p.max.gpu, "hours": p.max.hours},
            })
        cluster = await self._cluster_free()
        return _form_template().render(
            cluster=cluster,
            quota_url=url_path_join(self.hub.base_url if self.hub else "/hub/", "quota"),
            proposals=proposals,
            no_proposal=ctx.no_proposal_allowed,
            no_proposal_value=NO_PROPOSAL,
            profiles=profiles,
            values=self._prefill(ctx),
            role=quota_role(account.roles),
            quota=quota, used=used, left=left, gib=GIB,
            others=[o.to_options() for o in ctx.others],
        )

    async def _cluster_free(self):
        """Slurm: free CPUs and memory per partition (sinfo), for the form; None if not offered."""
        if "slurm" not in self.backends or _slurm is None:
            return None
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "SLURM_CONF", "LANG")}
        conf = self.config.get("SlurmSpawner", {}).get("slurm_conf")
        if conf:
            env["SLURM_CONF"] = conf
        return await _slurm.free_per_partition(env) or []

    async def quota_summary(self) -> dict:
        """For the quota page: the role, the quota, what is used and what is left."""
        ctx, account, _ = await self.spawn_context()
        everything = total(self._all_live())
        quota = ctx.quota
        return {
            "role": quota_role(account.roles),
            "roles": QUOTA_ROLES,
            "quota": quota,
            "used": everything,
            "left": available(quota, everything),
            "proposal_quotas": ctx.proposal_quotas,
            "sessions": [
                {"server": name or "(default)", **opts}
                for name, opts in self._all_live_named()
            ],
        }

    def _all_live_named(self):
        for name, sp in self.user.spawners.items():
            opts = getattr(sp, "session_options", None)
            if sp.active and opts:
                yield name, opts

    def _all_live(self):
        for _, opts in self._all_live_named():
            yield SessionRequest(None if opts["proposal"] == NO_PROPOSAL else opts["proposal"], opts["profile"],
                                 opts["backend"], int(opts["cpu"]), int(float(opts["memory"]) * GIB),
                                 int(opts["gpu"]), float(opts["hours"]))

    # -- lifecycle, forwarded to the child
    async def start(self):
        request, ctx, account, proposals = await self.check_options(self.user_options or {})
        profile = ctx.catalogue.get(request.profile)
        if self.child_spawner is not None and self.child_backend != request.backend:
            self.child_spawner = None
            self.child_state = {}
        child = self.construct_child(request.backend)
        self.session_options = request.to_options()
        child.configure_session(SessionOrder(request, profile, account, tuple(proposals)))
        self.log.info("Starting %s: %s", self._log_name, ", ".join(f"{k}={v}" for k, v in self.session_options.items()))
        try:
            return await child.start()
        except web.HTTPError:
            raise
        except (TimeoutError, asyncio.CancelledError):
            raise
        except Exception as e:
            self.log.exception("The %s backend failed to start %s", request.backend, self._log_name)
            raise refuse(
                f"The session could not start on {request.backend} ({type(e).__name__}: {e}). "
                f"Contact {self.contact} if this persists.", reason="backend-error", status_code=500,
            ) from None

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
        return await child.poll()

    async def stop(self, now=False):
        child = self._existing_child()
        if child is not None:
            await child.stop(now=now)

    async def progress(self):
        for _ in range(60):  # the child appears once the options are checked
            if self.child_spawner is not None:
                break
            await asyncio.sleep(0.5)
        else:
            return
        async for event in self.child_spawner.progress():
            yield event

