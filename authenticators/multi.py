"""Several OpenID Connect providers on one login page.

"Sign in with UmbrellaID" and "Sign in with your facility account" side by side:
each provider is an :class:`~daas_hub.authenticators.oidc.OIDCAuthenticator`
child with its own URL prefix (``/hub/<name>/oauth_login``, ``.../oauth_callback``),
built with this authenticator as its parent so the hub's configuration
(``c.OIDCAuthenticator``, ``c.ProposalMapping``, ``c.ConditionsOfUse``) reaches it.

Hub usernames never come from a provider: every provider's identity is linked to a
facility account by the proposal source (UmbrellaID by subject, the facility SSO by
its username claim), and the hub user is that account. Two providers therefore
cannot collide, and a provider whose users choose their own usernames cannot
impersonate anyone.

Why not ``jupyterhub-multiauthenticator``: it prefixes every hub username with
the provider's name (we need the linked facility account), builds its children
without a parent (the hub's configuration does not reach them) and does not pass
``refresh_user`` or ``pre_spawn_start`` to them (see docs/login.md).
"""

from __future__ import annotations

import html

from jupyterhub.auth import Authenticator
from jupyterhub.handlers.login import LogoutHandler
from traitlets import Dict, List, Unicode, validate

from .conditions import ConditionsGuard, ConditionsHandler
from .mapping import ProposalLogin
from .oidc import LOGIN_KEY, OIDCAuthenticator, provider_logout_url

PROVIDER_KEYS_HELP = "name, label, and any OIDCAuthenticator setting (issuer, client_id, link_by, ...)"


class MultiLogoutHandler(LogoutHandler):
    """Ends the hub session, then the provider's session where it offers one."""

    _provider_logout: str | None = None

    async def get(self):
        user = self.current_user
        if user is not None:
            state = await user.get_auth_state() or {}
            record = state.get(LOGIN_KEY) or {}
            child = self.authenticator.provider(record.get("provider", ""))
            if child is not None and child.end_provider_session:
                back = self.authenticator.post_logout_redirect_url or (
                    f"{self.request.protocol}://{self.request.host}{self.settings['login_url']}"
                )
                self._provider_logout = provider_logout_url(record, back, child.client_id)
        await super().get()

    async def render_logout_page(self):
        if self._provider_logout:
            self.redirect(self._provider_logout)
            return
        return await super().render_logout_page()


def umbrella_issuer_clash(entries: list[dict], i: int) -> None:
    """Refuse a second ``link_by: umbrella_id`` provider with another issuer.

    A subject is only unique within its issuer, and the catalogue links one
    ``umbrella_id`` per account: two such issuers would share one namespace.
    """
    issuers = {str(e.get("issuer", "")).rstrip("/") for e in entries if e.get("link_by") == "umbrella_id"}
    if len(issuers) > 1:
        raise ValueError(
            f"MultiAuthenticator.providers[{i}] ({entries[i].get('name')}): only one issuer may link by "
            f"umbrella_id, and {' and '.join(sorted(issuers))} both do; a subject is only unique within "
            f"its issuer. Link the other provider by username, or list it on another hub"
        )


class MultiAuthenticator(ConditionsGuard, ProposalLogin, Authenticator):
    """One login page, several OpenID Connect providers, one proposal mapping."""

    providers = List(
        Dict(),
        config=True,
        help=f"""The identity providers offered on the login page, in order. Each entry
        is a dict: {PROVIDER_KEYS_HELP}. ``name`` (lowercase letters, digits, dashes)
        is the URL prefix: the provider's redirect URL is
        ``https://<hub>/hub/<name>/oauth_callback``.

        Example::

            c.MultiAuthenticator.providers = [
                {{"name": "umbrella", "label": "UmbrellaID", "issuer": "https://...",
                  "client_id": "daas-hub", "client_secret": "...", "link_by": "umbrella_id"}},
                {{"name": "facility", "label": "your facility account",
                  "issuer": "https://sso.example.org/realms/facility", "client_id": "daas-hub",
                  "client_secret": "...", "link_by": "username",
                  "role_groups": {{"staff": ["facility-staff"]}}}},
            ]
        """,
    )

    post_logout_redirect_url = Unicode(
        "",
        config=True,
        help="""Where providers send people back after ending their session (register it
        at each provider). Empty: the hub's login page, as reached by the browser.

        Example: ``"https://daas.example.org/hub/login"``
        """,
    )

    @validate("providers")
    def _check_providers(self, proposal):
        names = set()
        allowed = set(OIDCAuthenticator.class_trait_names(config=True))
        for i, entry in enumerate(proposal["value"]):
            name = entry.get("name", "")
            if not name or not name.replace("-", "").isalnum() or not name[0].isalpha() or name != name.lower():
                raise ValueError(
                    f"MultiAuthenticator.providers[{i}]: 'name' must be lowercase letters, digits "
                    f"and dashes, starting with a letter (it becomes the URL /hub/<name>/...), not {name!r}"
                )
            if name in names or name in ("conditions", "logout", "login", "api"):
                raise ValueError(f"MultiAuthenticator.providers[{i}]: the name {name!r} is already taken")
            names.add(name)
            umbrella_issuer_clash(proposal["value"][: i + 1], i)
            unknown = set(entry) - {"name", "label"} - allowed
            if unknown:
                raise ValueError(
                    f"MultiAuthenticator.providers[{i}] ({name}): unknown key(s) {sorted(unknown)}; "
                    f"allowed: {PROVIDER_KEYS_HELP}"
                )
        return proposal["value"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._children: dict[str, OIDCAuthenticator] = {}
        for entry in self.providers:
            traits = {k: v for k, v in entry.items() if k not in ("name", "label")}
            child = OIDCAuthenticator(
                parent=self, url_prefix=entry["name"], login_service=entry.get("label", entry["name"]),
                **traits,
            )
            child.conditions = self.conditions
            child.mapping = self.mapping  # one proposal source (one cache, one pool) for all providers
            self._children[entry["name"]] = child

    def provider(self, name: str) -> OIDCAuthenticator | None:
        return self._children.get(name)

    def check_allow_config(self):
        if not self._children:
            raise ValueError("MultiAuthenticator.providers is empty: configure at least one identity provider")
        for child in self._children.values():
            child.check_allow_config()

    def get_custom_html(self, base_url):
        buttons = []
        for name, child in self._children.items():
            url = html.escape(child.login_url(base_url))
            label = html.escape(child.login_service)
            buttons.append(
                f'<div class="service-login daas-provider" style="margin: 0.6em 0">'
                f'<a role="button" id="daas-login-{name}" class="btn btn-jupyter btn-lg" '
                f"href='{url}{{% if next is defined and next|length %}}?next={{{{next}}}}{{% endif %}}'>"
                f"Sign in with {label}</a></div>"
            )
        return "\n".join(buttons)

    def get_handlers(self, app):
        routes = []
        for child in self._children.values():
            for path, handler in child.get_handlers(app):
                # each provider's handlers see their own authenticator
                routes.append((path, type(handler.__name__, (handler,), {"authenticator": child})))
        routes.append((r"/conditions", ConditionsHandler, {"conditions": self.conditions}))
        routes.append((r"/logout", MultiLogoutHandler))
        return routes

    async def authenticate(self, handler, data):
        # there is no password form: every login goes through a provider's handlers
        return None

    def _child_for(self, auth_state: dict | None) -> OIDCAuthenticator | None:
        record = (auth_state or {}).get(LOGIN_KEY) or {}
        return self._children.get(record.get("provider", "")) or next(iter(self._children.values()), None)

    async def refresh_user(self, user, handler=None, **kwargs):
        child = self._child_for(await user.get_auth_state())
        if child is None:
            return True
        return await child.refresh_user(user, handler)
