"""What every daas-hub backend shares: the session's account, home and proposals folder.

:class:`SessionSetup` is a traitlets mixin for the child spawners (local, Slurm,
and later Kubernetes). The wrapper spawner (:mod:`daas_hub.spawners.wrapper`)
hands each child one :class:`SessionOrder` through :meth:`configure_session`:
the checked request, its profile, the account and the proposals. A child never
reads ``user_options``.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tornado.web import HTTPError as _HTTPError
from traitlets import HasTraits, Integer, Unicode, default, validate

from daas_hub.access import LoginPolicy, ProposalLookup, read_auth_state
from daas_hub.errors import reference, with_reference
from daas_hub.model import Account, Proposal
from daas_hub.mounts import DEFAULT_ROOT, MountPlan, describe_missing, missing_sources, plan_mounts
from daas_hub.options import SessionRequest
from daas_hub.profiles import Profile
from daas_hub.provenance import REQUEST_ENV, SOFTWARE_ENV, profile_software
from daas_hub.safety import home_problem, home_root_problem, session_account_problem
from daas_hub.session import MATERIAL_ENV, PLAN_ENV, UMASK_ENV
from daas_hub.vmgateway import SERVICE_ENV

from .first_start import FirstStartRefused, account_from_source, lookup_for


class CompatSpawnException(_HTTPError):
    """JupyterHub 6's ``SpawnException`` (jupyterhub/spawner.py l.78) for JupyterHub 5.5.

    Same constructor and attributes: the status code, the reason, the message
    people read and the log message are kept as given.
    """

    reason = ""
    status_code = 400
    message = ""
    message_html = ""
    log_message = ""  # a plain attribute, shadowing tornado's read-only property

    def __init__(self, message, *, reason, log_message="", message_html="", status_code=400):
        self.message = message
        self.reason = reason
        self.log_message = log_message or message
        self.message_html = message_html
        self.status_code = status_code
        super().__init__(status_code, message, reason=reason)

    def get_message(self):
        return self.log_message

    def __str__(self):
        return f"{self.status_code} {type(self).__name__}(reason={self.reason}): {self.log_message}"


try:  # JupyterHub >= 6.0
    from jupyterhub.spawner import SpawnException
except ImportError:  # JupyterHub 5.5 (the chart's hub); tests/test_packaging.py runs this path
    SpawnException = CompatSpawnException


def refuse(message: str, reason: str, *, status_code: int = 400, log_message: str = "") -> SpawnException:
    """A spawn refusal people read: no traceback, the message as is."""
    err = SpawnException(message, reason=reason, status_code=status_code, log_message=log_message)
    err.jupyterhub_message = message
    return err


def refuse_logged(log, message: str, *, detail: str, reason: str, status_code: int = 500) -> SpawnException:
    """A refusal whose detail (paths, exception text, a command's stderr) goes to the hub's
    log only; the person reads ``message`` and a reference that finds the detail in the log."""
    ref = reference()
    log.error("[%s] %s: %s", ref, reason, detail)
    return refuse(with_reference(message, ref), reason=reason, status_code=status_code)


def shown_error(exc: BaseException, *, log, server: str, doing: str, contact: str) -> str:
    """The one way to log and show an error: the detail to the log, a sentence to the person.

    A refusal we wrote (``jupyterhub_message``) is shown as is and logged as a
    warning; anything else is logged with its traceback, the server's name and a
    reference, and the person reads what failed, whom to contact and the reference
    (the same as :func:`refuse_logged`), never ``str(exc)``.
    """
    message = getattr(exc, "jupyterhub_message", None)
    if message:
        detail = exc.get_message() if isinstance(exc, _HTTPError) else None
        log.warning("%s for %s refused: %s", doing, server, detail or message)
        return message
    ref = reference()
    log.error("[%s] %s for %s failed", ref, doing, server, exc_info=exc)
    return with_reference(f"{doing} failed on the hub. Contact {contact} if this persists.", ref)


_warned_authenticators: set[type] = set()


def policy_for(authenticator, log=None) -> LoginPolicy:
    """The login's :class:`LoginPolicy`, which every daas-hub login publishes as
    ``login_policy``.

    Spawners work under any authenticator: one that publishes no policy gets the
    defaults, and the admin is told once what the spawners need from a login.
    """
    policy = getattr(authenticator, "login_policy", None)
    if isinstance(policy, LoginPolicy):
        return policy
    cls = type(authenticator)
    if log is not None and cls not in _warned_authenticators:
        _warned_authenticators.add(cls)
        log.warning(
            "%s publishes no daas-hub login policy: using the defaults (contact: %s). The daas "
            "spawners need each user's account and proposals in auth_state, which the daas-hub "
            "logins (daas-oidc, daas-multi, daas-demo) keep; with another authenticator, mix in "
            "daas_hub.authenticators.mapping.ProposalLogin.",
            cls.__name__, LoginPolicy().contact,
        )
    return LoginPolicy()


async def checked_account(user, policy: LoginPolicy, *, status_code: int = 400, lookup: ProposalLookup | None = None,
                          log=None, manage_groups: bool = False) -> tuple[Account, list[Proposal]]:
    """The account and proposals from ``user``'s auth_state, if they may have a session.

    A user who never signed in has none: with the login's ``lookup`` they are read
    from the proposal source and kept (:mod:`daas_hub.spawners.first_start`).
    """
    state = await user.get_auth_state()
    known = read_auth_state(state)
    if known is None and lookup is not None:
        try:
            known = await account_from_source(user, lookup, policy, state=state, log=log,
                                              manage_groups=manage_groups)
        except FirstStartRefused as e:
            raise refuse(e.message, reason=e.reason, status_code=status_code) from None
    if known is None:
        raise refuse(
            "The hub has no proposal information for you (it is kept from your last "
            "login). Please log out and sign in again.",
            reason="no-auth-state",
        )
    account, proposals = known
    decision = policy.decide(account, proposals, who=user.name)
    if not decision.allowed:
        raise refuse(decision.message, reason=decision.reason, status_code=status_code)
    return account, proposals


def _hub_account() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


class BackgroundFigure:
    """A figure fetched in the background, for pages that must not wait (the form's cluster figures).

    :meth:`current` answers at once: the last figure while it is younger than
    ``max_age``, else None; a stale or missing figure starts one refresh
    (``fetch``, bounded by ``timeout``) for the next reader. A failed refresh is
    logged and leaves no figure until the next success. ``clock`` is injectable.
    """

    def __init__(self, fetch: Callable[[], Awaitable], *, max_age: float, timeout: float, what: str, log,
                 clock: Callable[[], float] = time.monotonic):
        self.fetch = fetch
        self.max_age = max_age
        self.timeout = timeout
        self.what = what
        self.log = log
        self.clock = clock
        self.value = None
        self.fetched_at = float("-inf")
        self.refreshes = 0
        self._task: asyncio.Task | None = None

    def current(self):
        fresh = self.clock() - self.fetched_at < self.max_age
        if not fresh and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._refresh())
        return self.value if fresh else None

    async def _refresh(self) -> None:
        self.refreshes += 1
        started = self.clock()
        try:
            value = await asyncio.wait_for(self.fetch(), self.timeout)
        except Exception as e:  # noqa: BLE001 - a background figure: logged, never raised to a page
            self.log.warning("%s gave no figure (%s); the form says unknown", self.what,
                             f"no answer within {self.timeout:g} s" if isinstance(e, TimeoutError) else e)
            return
        self.value, self.fetched_at = value, started

    async def settled(self) -> None:
        """Wait for the refresh under way, if any (tests, benchmarks)."""
        if self._task is not None:
            await asyncio.shield(self._task)


@dataclass(frozen=True)
class SessionOrder:
    """Everything a backend needs to start one session, checked by the wrapper."""

    request: SessionRequest
    profile: Profile
    account: Account
    proposals: tuple[Proposal, ...]
    #: a course session: the account it runs as (temporary accounts) and its material
    run_as: str | None = None
    material: dict | None = None


class SessionSetup(HasTraits):
    """Traits and helpers shared by the backends (mixed into each child spawner)."""

    run_as = Unicode(
        "",
        config=True,
        help="""Run every session as this system account.

        Empty (the default): each session runs as the user's facility account
        (from the proposal source), which must exist on this machine (and, for
        Slurm, on the compute nodes). The demo sets it to an unprivileged account
        it creates. Root (uid 0) is always refused.

        Example: ``"daas-demo"``
        """,
    )

    home_root = Unicode(
        "",
        config=True,
        help="""Give each session the home ``<home_root>/<hub username>``, created on
        first start and owned by the session's account (Slurm: a shared file system
        the nodes see).

        Empty (the default): the account's own home directory from the system.
        Example: ``"/srv/daas-hub/homes"``
        """,
    )

    proposals_root = Unicode(
        DEFAULT_ROOT,
        config=True,
        help="""Name of the folder in the session's home that shows the user's proposals.""",
    )

    start_slots = Integer(
        0,
        config=True,
        help="""How many sessions of this backend may start at the same time; the others wait
        their turn in the hub's start queue (first come, first served), see their place on
        the progress page, and never fail for waiting. 0: no queue (a batch scheduler queues
        itself). Local backend default: one per CPU core of the hub's machine.

        Example: ``c.LocalSpawner.start_slots = 4``

        .. versionadded:: 0.2
        """,
    )

    umask = Unicode(
        "0007",
        config=True,
        help="""The session's file-creation mask (octal). The default ``0007`` makes what
        a person writes in a proposal's ``processed`` folder (a setgid folder of the
        proposal's group) readable and writable by the team, and nothing for others;
        files in the home stay private because the home is ``0700``. Others never get
        write access, whatever is set here. See docs/local-backend.md ("Team folders").

        Example: ``"0027"`` (the team may read but not change each other's files)
        """,
    )

    @validate("umask")
    def _check_umask(self, proposal):
        try:
            value = int(proposal["value"], 8)
        except ValueError:
            raise ValueError(f"{type(self).__name__}.umask must be an octal mask such as \"0007\", "
                             f"not {proposal['value']!r}") from None
        if not 0 <= value <= 0o777:
            raise ValueError(f"{type(self).__name__}.umask {proposal['value']!r} is not a file mode mask")
        return proposal["value"]

    data_portal_url = Unicode(
        "",
        config=True,
        help="""The facility's data portal, named in the notice of archived proposals.

        Example: ``"https://data.facility.example"``
        """,
    )

    session_bin = Unicode(
        config=True,
        help="""Folder holding ``daas-hub-session`` and ``jupyterhub-singleuser`` for
        sessions. It must be readable and executable by the session accounts (and,
        for Slurm, exist at the same path on the nodes): build it with the system
        Python, not one in root's home. Default: the hub's own.
        """,
    )

    vm_service = Unicode(
        "",
        config=True,
        help="""The name of the hub service of the VM gateway (docs/desktops.md), set by
        ``daas_hub.vmgateway.configure_vm_gateway``. Sessions get a "Facility VMs"
        launcher tile and ``<server>/vm/`` leading to it; they never get guacd's
        address or any credential. Empty (the default): no VM tile.

        Example: ``"vm"``
        """,
    )

    @default("session_bin")
    def _default_session_bin(self):
        return str(Path(sys.executable).parent)

    @property
    def policy(self) -> LoginPolicy:
        """The login's policy (:func:`policy_for`)."""
        return policy_for(self.authenticator, self.log)

    @property
    def contact(self) -> str:
        return self.policy.contact

    _order: SessionOrder | None = None
    _account = None  # pwd entry of the account the session runs as
    _home = None
    _plan: MountPlan | None = None

    def configure_session(self, order: SessionOrder) -> None:
        """Called by the wrapper before :meth:`start`."""
        self._order = order

    async def _account_from_auth_state(self) -> tuple[Account, list[Proposal]]:
        """Standalone use (no wrapper): the account and proposals from auth_state."""
        return await checked_account(self.user, self.policy, lookup=lookup_for(self.authenticator), log=self.log,
                                     manage_groups=self.authenticator.manage_groups)

    def _prepare_session(self, account: Account, proposals) -> None:
        """Resolve the system account (never root), the home and the mount plan."""
        system_name = (self._order.run_as if self._order is not None else None) or self.run_as or account.username
        try:
            entry = pwd.getpwnam(system_name)
        except KeyError:
            raise refuse(
                f"Your account {system_name} does not exist on this machine, so no session "
                f"can run as you. Contact {self.contact}.",
                reason="no-system-account",
            ) from None
        if entry.pw_uid == 0:
            raise refuse_logged(
                self.log, f"Sessions never run as root, and this hub would run yours as root. Contact {self.contact}.",
                detail=f"{system_name} is root: set run_as (c.LocalSpawner.run_as / c.SlurmSpawner.run_as) "
                       f"to an unprivileged account", reason="root", status_code=400,
            )
        problem = session_account_problem(hub_euid=os.geteuid(), hub_user=_hub_account(),
                                          session_user=entry.pw_name)
        if problem:
            raise refuse_logged(self.log, f"This hub cannot start sessions as your account. Contact {self.contact}.",
                                detail=problem, reason="hub-not-root", status_code=400)
        self._account = entry
        self._home = self._prepare_home(entry)
        self._plan = plan_mounts(
            account.username, list(proposals), root=self.proposals_root,
            data_portal_url=self.data_portal_url or None,
        )
        for entry in missing_sources(self._plan):  # as the hub sees the file system
            self.log.warning("Starting %s: %s", self._log_name, describe_missing(entry))

    def _prepare_home(self, entry) -> str:
        no_home = (f"Your session has no usable home folder, so it was not started and nothing was "
                   f"changed. Contact {self.contact}.")
        if not self.home_root:
            if not os.path.isdir(entry.pw_dir):
                raise refuse_logged(
                    self.log, no_home, reason="home", status_code=400,
                    detail=f"the account {entry.pw_name} has no home directory ({entry.pw_dir}); create it or "
                           f"set home_root (c.LocalSpawner.home_root / c.SlurmSpawner.home_root)",
                )
            return entry.pw_dir
        problem = home_root_problem(self.home_root, hub_uid=os.geteuid())
        if problem:
            raise refuse_logged(self.log, no_home, detail=problem, reason="home", status_code=400)
        home = Path(self.home_root) / self.user.name
        if not os.path.lexists(home):
            home.mkdir(mode=0o700, parents=False)
            if os.geteuid() == 0:
                os.chown(home, entry.pw_uid, entry.pw_gid)
        problem = home_problem(str(home), uid=entry.pw_uid)
        if problem:
            raise refuse_logged(self.log, no_home, detail=problem, reason="home", status_code=400)
        return str(home)

    def session_paths(self) -> dict:
        """The mount plan and PATH every backend gives the session (its own programs first)."""
        return {
            PLAN_ENV: self._plan.to_json(),
            "PATH": os.pathsep.join([self.session_bin, "/usr/local/bin", "/usr/bin", "/bin"]),
        }

    def session_env(self) -> dict:
        """Variables every backend sets for the session (no secrets)."""
        env = {"USER": self._account.pw_name, "HOME": self._home, UMASK_ENV: self.umask}
        if self.vm_service:
            env[SERVICE_ENV] = self.vm_service
        shell = self._account.pw_shell or ""
        usable = os.path.exists(shell) and not shell.endswith(("nologin", "false"))
        env["SHELL"] = shell if usable else "/bin/bash"
        if self._order is not None:
            r = self._order.request
            env["DAAS_HUB_PROPOSAL"] = r.proposal or ""
            env["DAAS_HUB_PROFILE"] = r.profile
            env[REQUEST_ENV] = json.dumps(r.to_options(), sort_keys=True)  # for the provenance record
            env[SOFTWARE_ENV] = json.dumps(profile_software(self._order.profile, r.backend), sort_keys=True)
            if self._order.material:
                env[MATERIAL_ENV] = json.dumps(self._order.material)
        return env
