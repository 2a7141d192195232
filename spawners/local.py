"""The local backend: sessions as processes on the hub's own machine.

Built on JupyterHub's :class:`~jupyterhub.spawner.LocalProcessSpawner`. It is the
backend of the demo and of small single-machine sites. Each session runs as an
unprivileged system account, never as root: the user's facility account (it
must exist on the machine), or one shared account the admin names (``run_as``,
the demo's choice). The session lays out its own proposals folder from the
mount plan the hub computes (:mod:`daas_hub.session`).
"""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import Unicode, default

from daas_hub.access import decide_access, read_auth_state, stale_notice
from daas_hub.errors import SettingsError
from daas_hub.mounts import DEFAULT_ROOT, plan_mounts
from daas_hub.session import PLAN_ENV
from daas_hub.vmtargets import GUACD_ENV, TARGETS_ENV, load_targets, targets_env, targets_for

try:  # JupyterHub >= 5.4
    from jupyterhub.spawner import SpawnException
except ImportError:  # pragma: no cover - older hubs
    from tornado.web import HTTPError as _HTTPError

    class SpawnException(_HTTPError):
        def __init__(self, message, *, reason, **kwargs):
            super().__init__(400, message)
            self.jupyterhub_message = message
            self.reason = reason


def _refuse(message: str, reason: str) -> SpawnException:
    err = SpawnException(message, reason=reason)
    err.jupyterhub_message = message
    return err


class LocalSpawner(LocalProcessSpawner):
    """Start sessions as local processes, with the user's proposals folder."""

    run_as = Unicode(
        "",
        config=True,
        help="""Run every session as this local system account.

        Empty (the default): each session runs as the user's facility account
        (from the proposal source), which must exist on this machine. The demo
        sets it to an unprivileged account it creates, and says so on its pages.
        Root (uid 0) is always refused.

        Example: ``"daas-demo"``
        """,
    )

    home_root = Unicode(
        "",
        config=True,
        help="""Give each session the home ``<home_root>/<hub username>``, created on
        first start and owned by the session's account.

        Empty (the default): the account's own home directory from the system.
        Example: ``"/srv/daas-hub/homes"``
        """,
    )

    proposals_root = Unicode(
        DEFAULT_ROOT,
        config=True,
        help="""Name of the folder in the session's home that shows the user's proposals.""",
    )

    data_portal_url = Unicode(
        "",
        config=True,
        help="""The facility's data portal, named in the notice of archived proposals.

        Example: ``"https://data.facility.example"``
        """,
    )

    vm_targets_file = Unicode(
        "",
        config=True,
        help="""The facility's virtual machines users may open in their session (YAML,
        docs/desktops.md), with who may open each. Each session gets the machines its
        user may open, computed from their roles and proposals at start; the session
        accepts no other. Empty (the default): no VM desktops.

        Example: ``"/etc/daas-hub/vm-targets.yaml"``
        """,
    )

    guacd_address = Unicode(
        "",
        config=True,
        help="""``host:port`` of the guacd daemon sessions connect to for VM desktops.

        Example: ``"127.0.0.1:4822"``. Empty: the VM page says the VM desktop is
        unavailable.
        """,
    )

    session_bin = Unicode(
        config=True,
        help="""Folder holding ``daas-hub-session`` and ``jupyterhub-singleuser`` for
        sessions. It must be readable and executable by the session accounts: build
        it with the system Python, not one in root's home. Default: the hub's own.
        """,
    )

    @default("session_bin")
    def _default_session_bin(self):
        return str(Path(sys.executable).parent)

    @default("cmd")
    def _default_cmd(self):
        return [
            os.path.join(self.session_bin, "daas-hub-session"),
            os.path.join(self.session_bin, "jupyterhub-singleuser"),
        ]

    @default("default_url")
    def _default_default_url(self):
        return "/lab"

    def _policy(self):
        """Facility name, contact and staff rule: the login's, so they are set once."""
        mapping = getattr(self.authenticator, "mapping", None)
        return (
            getattr(mapping, "facility_name", "the facility"),
            getattr(mapping, "contact", "the facility's user office"),
            getattr(mapping, "staff_without_proposal", True),
        )

    _account = None  # pwd entry of the account the session runs as
    _home = None
    _plan = None
    _vm_targets = ()

    async def start(self):
        known = read_auth_state(await self.user.get_auth_state())
        if known is None:
            raise _refuse(
                "The hub has no proposal information for you (it is kept from your last "
                "login). Please log out and sign in again.",
                reason="no-auth-state",
            )
        account, proposals = known
        facility, contact, staff_without_proposal = self._policy()
        decision = decide_access(
            account, proposals, facility=facility, contact=contact, who=self.user.name,
            staff_without_proposal=staff_without_proposal,
        )
        if not decision.allowed:
            raise _refuse(decision.message, reason=decision.reason)
        system_name = self.run_as or account.username
        try:
            entry = pwd.getpwnam(system_name)
        except KeyError:
            raise _refuse(
                f"Your account {system_name} does not exist on this machine, so no session "
                f"can run as you. Contact {contact}.",
                reason="no-system-account",
            ) from None
        if entry.pw_uid == 0:
            raise _refuse(
                f"Sessions never run as root, and {system_name} is root. The admin must set "
                f"c.LocalSpawner.run_as to an unprivileged account.",
                reason="root",
            )
        self._account = entry
        self._home = self._prepare_home(entry)
        self._plan = plan_mounts(
            account.username, proposals, root=self.proposals_root,
            data_portal_url=self.data_portal_url or None,
        )
        self._vm_targets = self._targets_for(account, proposals)
        try:
            return await super().start()
        except PermissionError:
            raise _refuse(
                f"The session could not start: the account {entry.pw_name} may not run "
                f"{self.cmd[0]}. Session programs must be readable and executable by that "
                f"account (build the session environment with Debian's /usr/bin/python3, "
                f"not a Python in root's home; see c.LocalSpawner.session_bin).",
                reason="session-environment",
            ) from None

    async def progress(self):
        """Tell the person when their proposals are the last known ones (catalogue outage)."""
        notice = stale_notice(await self.user.get_auth_state(), facility=self._policy()[0])
        if notice:
            yield {"progress": 10, "message": notice}

    def _targets_for(self, account, proposals):
        if not self.vm_targets_file:
            return ()
        try:
            return targets_for(account, proposals, load_targets(self.vm_targets_file))
        except SettingsError as e:  # the session starts; its VM page says none is open
            self.log.error("VM desktops are off for %s: %s", self.user.name, e)
            return ()

    def _prepare_home(self, entry) -> str:
        if not self.home_root:
            if not os.path.isdir(entry.pw_dir):
                raise _refuse(
                    f"The account {entry.pw_name} has no home directory ({entry.pw_dir}), so the "
                    f"session has nowhere to keep your files. The admin must create it or set "
                    f"c.LocalSpawner.home_root.",
                    reason="home",
                )
            return entry.pw_dir
        if not os.path.isdir(self.home_root):
            raise _refuse(
                f"The folder for session homes ({self.home_root}) does not exist. The admin must "
                f"create it (owned by root, mode 0755) or correct c.LocalSpawner.home_root.",
                reason="home",
            )
        home = Path(self.home_root) / self.user.name
        if home.is_symlink():
            raise _refuse(f"{home} is a symbolic link; the admin must remove it.", reason="home")
        if not home.exists():
            home.mkdir(mode=0o700, parents=False)
            if os.geteuid() == 0:
                os.chown(home, entry.pw_uid, entry.pw_gid)
        return str(home)

    def make_preexec_fn(self, name):
        setuid = set_user_setuid(self._account.pw_name, chdir=False) if os.geteuid() == 0 else None
        home = self._home

        def preexec():
            if setuid:
                setuid()
            os.chdir(home)

        return preexec

    def user_env(self, env):
        env["USER"] = self._account.pw_name
        env["HOME"] = self._home
        shell = self._account.pw_shell or ""
        usable = os.path.exists(shell) and not shell.endswith(("nologin", "false"))
        env["SHELL"] = shell if usable else "/bin/bash"
        return env

    def get_env(self):
        env = super().get_env()
        env[PLAN_ENV] = self._plan.to_json()
        if self._vm_targets:
            env[TARGETS_ENV] = targets_env(self._vm_targets)
        if self.guacd_address:
            env[GUACD_ENV] = self.guacd_address
        env["PATH"] = os.pathsep.join([self.session_bin, "/usr/local/bin", "/usr/bin", "/bin"])
        return env
