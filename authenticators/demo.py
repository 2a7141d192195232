"""The demo login: sample users sign in by name, without a password.

For the embedded demo only. The site settings refuse ``login: {kind: demo}``
unless ``demo: true``, and the authenticator refuses to start on an address
other than loopback unless the admin says otherwise.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

from jupyterhub.auth import Authenticator
from traitlets import Bool, default

from daas_hub.model import Identity, Provider

from .mapping import ProposalLogin


class DemoAuthenticator(ProposalLogin, Authenticator):
    """Sign in as any account of the proposal source, by name, with no password.

    Accounts, proposals, groups and ``auth_state`` go through the same
    :class:`ProposalMapping` as a real login, so the demo behaves like a site.
    """

    allow_remote = Bool(
        False,
        config=True,
        help="""Allow the demo login when the hub listens on an address other than
        loopback. Anyone who can reach the hub can then sign in as any sample user:
        leave this off unless the machine is on a closed network.
        """,
    )

    @default("auth_refresh_age")
    def _default_auth_refresh_age(self):
        return 60

    def check_allow_config(self):
        super().check_allow_config()
        self.mapping.check()
        bind_url = getattr(self.parent, "bind_url", "") if self.parent else ""
        host = urlparse(bind_url).hostname or ""
        if host and not self.allow_remote and not _is_loopback(host):
            # a start-up refusal, not a crash: no traceback (SystemExit passes JupyterHub's handler)
            self.log.critical(
                "daas-hub cannot start: the demo login lets anyone sign in without a password, and "
                "the hub would listen on %s. Fix: bind the demo hub to 127.0.0.1 (hub.url in the site "
                "settings), or set c.DemoAuthenticator.allow_remote = True on a closed network.",
                bind_url,
            )
            raise SystemExit(2)
        self.log.warning("Demo login: sample users sign in without a password. Never use it on a real site.")

    async def authenticate(self, handler, data):
        name = self.normalize_username((data or {}).get("username", "").strip())
        if not name:
            return None
        identity = Identity(provider=Provider.DEMO, subject=name, username=name)
        return await self.mapping.auth_model(identity, name=name, who=f'"{name}"')

    async def refresh_user(self, user, handler=None):
        return await self.mapping.refresh(await user.get_auth_state(), name=user.name)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
