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
        exposed = [url for url in _listen_urls(self.parent) if not _is_loopback(_host(url))]
        if exposed and not self.allow_remote:
            # a start-up refusal, not a crash: no traceback (SystemExit passes JupyterHub's handler)
            self.log.critical(
                "daas-hub cannot start: the demo login lets anyone sign in without a password, and "
                "the hub would listen on %s (not loopback only). Fix: bind the demo hub to 127.0.0.1 "
                "(hub.url in the site settings, and c.JupyterHub.hub_bind_url if you set it), or set "
                "c.DemoAuthenticator.allow_remote = True on a closed network.",
                " and ".join(exposed),
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


def _listen_urls(app) -> list[str]:
    """Where the hub listens: the public (proxy) URL and the hub's own bind URL."""
    if app is None:
        return []
    urls = [getattr(app, "bind_url", "") or ""]
    hub_bind = getattr(app, "hub_bind_url", "") or ""
    if not hub_bind and hasattr(app, "hub_ip"):
        hub_bind = f"http://{app.hub_ip}:{getattr(app, 'hub_port', 8081)}"
    urls.append(hub_bind)
    return [u for u in urls if u]


def _host(url: str) -> str:
    """The URL's host; empty (every interface) when it has none or cannot be read."""
    try:
        return urlparse(url).hostname or ""
    except ValueError:
        return ""


def _is_loopback(host: str) -> bool:
    """True only for a loopback host; an empty host means every interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
