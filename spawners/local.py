"""The local backend: sessions as processes on the hub's own machine.

Built on JupyterHub's :class:`~jupyterhub.spawner.LocalProcessSpawner`. It is the
backend of the demo and of small single-machine sites. Each session runs as an
unprivileged system account, never as root: the user's facility account (it
must exist on the machine), or one shared account the admin names (``run_as``,
the demo's choice). The session lays out its own proposals folder from the
mount plan the hub computes (:mod:`daas_hub.session`).

Used as a child of :class:`daas_hub.spawners.wrapper.DaasSpawner` (which checks
the request and calls :meth:`configure_session`), or alone as ``daas-local``.
"""

from __future__ import annotations

import os

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import default

from daas_hub.access import stale_notice

from .burst import LocalBurst, lower_priority
from .common import SessionSetup, refuse, refuse_logged

__all__ = ["LocalSpawner", "refuse"]


class LocalSpawner(LocalBurst, SessionSetup, LocalProcessSpawner):
    """Start sessions as local processes, with the user's proposals folder."""

    @default("cmd")
    def _default_cmd(self):
        return [
            os.path.join(self.session_bin, "daas-hub-session"),
            os.path.join(self.session_bin, "daas-hub-singleuser"),  # jupyterhub-singleuser, cheaper start
        ]

    @default("default_url")
    def _default_default_url(self):
        return "/lab"

    async def start(self):
        if self._order is not None:
            account, proposals = self._order.account, self._order.proposals
            r = self._order.request
            # LocalProcessSpawner does not enforce these; the session sees them
            # as MEM_LIMIT / CPU_LIMIT (jupyter-resource-usage shows them)
            self.mem_limit = r.memory
            self.cpu_limit = float(r.cpu)
        else:
            account, proposals = await self._account_from_auth_state()
        self._prepare_session(account, proposals)
        try:
            return await super().start()
        except PermissionError:
            raise refuse_logged(
                self.log, f"The session could not start: its programs cannot be run by your session's "
                f"account. Contact {self.contact}.",
                detail=f"the account {self._account.pw_name} may not run {self.cmd[0]}. Session programs must "
                f"be readable and executable by that account (build the session environment with Debian's "
                f"/usr/bin/python3, not a Python in root's home; see c.LocalSpawner.session_bin)",
                reason="session-environment",
            ) from None

    async def progress(self):
        """Tell the person when their proposals are the last known ones (catalogue outage)."""
        notice = stale_notice(await self.user.get_auth_state(), facility=self.policy.facility_name)
        if notice:
            yield {"progress": 10, "message": notice}

    def make_preexec_fn(self, name):
        setuid = set_user_setuid(self._account.pw_name, chdir=False) if os.geteuid() == 0 else None
        home = self._home
        nice = self.nice_increment()

        def preexec():
            lower_priority(nice)  # below the hub's (LocalBurst.session_nice), its autogroup too
            if setuid:
                setuid()
            os.chdir(home)

        return preexec

    def user_env(self, env):
        env.update(self.session_env())
        return env

    def get_env(self):
        env = super().get_env()
        if self._order is not None:
            env.update(self._order.profile.local_environment)
        env.update(self.session_paths())
        return env
