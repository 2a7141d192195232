"""Sign in through an OpenID Connect provider (UmbrellaID, Keycloak, ...).

:class:`OIDCAuthenticator` is oauthenticator's GenericOAuthenticator plus what
OpenID Connect adds: endpoints from the issuer's discovery document, a ``nonce``
checked in a signature-verified ID token, PKCE always on. The base class owns the
flow (state cookie, code exchange, userinfo); this class fills its hooks:

- ``update_auth_model``: identity -> facility account -> proposals through
  :class:`~daas_hub.authenticators.mapping.ProposalMapping`. The hub username is
  the LINKED facility account, never a claim the provider lets people choose.
- ``get_token_info``: the ID token check, and readable errors when the provider
  refuses a code (replayed, expired) or does not answer.
- ``refresh_user``: proposals re-read from the catalogue on ``auth_refresh_age``.

Several providers share one login page through
:class:`~daas_hub.authenticators.multi.MultiAuthenticator`.
"""

from __future__ import annotations

import json
import secrets
import time
from http import HTTPStatus
from urllib.parse import urlencode

import jwt
from jupyterhub.utils import url_path_join
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import (
    OAuthCallbackHandler,
    OAuthLoginHandler,
    _deserialize_state,
    _serialize_state,
)
from tornado import web
from tornado.httpclient import HTTPClientError, HTTPRequest
from traitlets import Bool, Dict, Enum, Float, Unicode, default, validate

from daas_hub.access import STATE_KEY, proposal_groups, read_auth_state
from daas_hub.model import Identity, Provider

from .conditions import CONDITIONS_KEY, ConditionsGuard, carry_forward
from .mapping import ProposalLogin

#: asymmetric algorithms accepted for ID tokens (never "none", never HMAC)
SAFE_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LOGIN_KEY = "daas_login"


class ProviderUnavailable(Exception):
    """The identity provider did not answer, or answered nonsense."""


def _error(status: int, message: str, log: str = "") -> web.HTTPError:
    """A refusal people read: ``message`` on the page under the status' plain title
    ("503 : Service Unavailable"); ``log`` (internals) only in the hub's log."""
    err = web.HTTPError(status, "%s", log or message, reason=HTTPStatus(status).phrase)
    err.jupyterhub_message = message
    return err


class OIDCLoginHandler(OAuthLoginHandler):
    """Reads the discovery document first; adds the nonce beside state and PKCE."""

    _nonce = None

    async def get(self):
        try:
            await self.authenticator.discover(recheck=True)
        except ProviderUnavailable as e:
            raise self.authenticator.unavailable_error(e) from None
        super().get()

    def set_state_cookie(self, state_cookie_value):
        state = _deserialize_state(state_cookie_value)
        self._nonce = state["nonce"] = secrets.token_urlsafe(24)
        super().set_state_cookie(_serialize_state(state))

    def authorize_redirect(self, *args, extra_params=None, **kwargs):
        extra_params = dict(extra_params or {})
        extra_params["nonce"] = self._nonce
        return super().authorize_redirect(*args, extra_params=extra_params, **kwargs)


class OIDCCallbackHandler(OAuthCallbackHandler):
    """The base callback, with errors people can read and the conditions page next."""

    def check_arguments(self):
        provider = self.authenticator.login_service
        error = self.get_argument("error", "")
        if error:
            description = self.get_argument("error_description", "")
            # the provider's words stay in the log: anyone can put any text in this URL
            raise _error(
                403,
                f"{provider} did not sign you in. Nothing was changed here. "
                f"Go back to the login page to try again.",
                f"provider returned error {error[:100]!r}: {description[:300]!r}",
            )
        try:
            super().check_arguments()
        except web.HTTPError as e:
            raise _error(
                400,
                f"This sign-in response cannot be used: it does not belong to a sign-in started in "
                f"this browser (it may be old, used twice, or forged). You are not signed in and "
                f"nothing was changed. Go back to the login page and choose {provider} again.",
                f"callback refused: {e.log_message}",
            ) from None

    async def get(self):
        self.check_arguments()
        user = await self.login_user()
        if user is None:
            raise web.HTTPError(403, self.authenticator.custom_403_message)
        next_url = self.get_next_url(user)
        conditions = self.authenticator.conditions
        if conditions.required and not conditions.accepted(await user.get_auth_state()):
            next_url = conditions.page_url(self.hub.base_url, next_url)
        self.redirect(next_url)


class OIDCAuthenticator(ConditionsGuard, ProposalLogin, GenericOAuthenticator):
    """OpenID Connect login mapped to facility accounts and proposals."""

    login_handler = OIDCLoginHandler
    callback_handler = OIDCCallbackHandler

    issuer = Unicode(
        "",
        config=True,
        help="""The provider's issuer URL; the endpoints are read from
        ``<issuer>/.well-known/openid-configuration``.

        Example: ``"https://umbrellaid.org/oidc"`` (ask UmbrellaID for the exact value),
        ``"https://sso.example.org/realms/facility"`` (Keycloak).
        """,
    )

    link_by = Enum(
        ["umbrella_id", "username"],
        "username",
        config=True,
        help="""How an identity from this provider is linked to a facility account.

        ``umbrella_id``: by the provider's subject (``sub``), matched against the
        account's ``umbrella_id`` in the proposal source; other claims are ignored,
        so a self-chosen username cannot take over an account. Use it for
        UmbrellaID and any provider where people create their own accounts.
        ``username``: by the ``username_claim`` (the facility's own SSO, which
        issues the facility usernames itself).
        """,
    )

    url_prefix = Unicode(
        "",
        config=True,
        help="""Path under the hub where this provider's login and callback live
        (``/hub/<prefix>/oauth_login``, ``/hub/<prefix>/oauth_callback``). Set by
        :class:`MultiAuthenticator` from the provider's name.
        """,
    )

    discovery_timeout = Float(
        10,
        config=True,
        help="""Seconds to wait for the provider's discovery document, keys and
        token endpoint before telling the user the provider does not answer.""",
    )

    discovery_max_age = Float(
        3600,
        config=True,
        help="""Seconds the discovery document and signing keys are kept before they
        are read again (keys are also re-read when a token names an unknown key).""",
    )

    role_claims = Dict(
        {},
        config=True,
        help="""Roles granted from claims: role -> claim name. The role is granted when
        the claim is true, or (for a list claim) non-empty. Roles: ``staff``,
        ``admin``, ``instructor``.

        Example: ``{"staff": "is_staff"}``
        """,
    )

    role_groups = Dict(
        {},
        config=True,
        help="""Roles granted from group membership: role -> list of groups, read from
        the claim named by ``groups_claim``.

        Example: ``{"staff": ["facility-staff"], "admin": ["daas-admins"], "instructor": ["trainers"]}``
        """,
    )

    groups_claim = Unicode(
        "groups",
        config=True,
        help="""The claim listing the person's groups at the provider (for ``role_groups``).""",
    )

    end_provider_session = Bool(
        True,
        config=True,
        help="""On logout, also end the session at the provider when it offers an
        ``end_session_endpoint`` (OpenID Connect RP-initiated logout). The provider
        must know the hub's login page as a post-logout redirect URL.""",
    )

    @default("enable_pkce")
    def _default_enable_pkce(self):
        return True

    @default("scope")
    def _default_scope(self):
        return ["openid", "profile", "email"]

    @default("username_claim")
    def _default_username_claim(self):
        return "sub" if self.link_by == "umbrella_id" else "preferred_username"

    @default("login_service")
    def _default_login_service(self):
        return "OpenID Connect"

    @default("http_request_kwargs")
    def _default_http_request_kwargs(self):
        return {"connect_timeout": self.discovery_timeout, "request_timeout": self.discovery_timeout}

    @validate("issuer")
    def _check_issuer(self, proposal):
        # kept as written: an issuer may end in "/" (the ID token's iss must match it exactly)
        value = proposal["value"].strip()
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"OIDCAuthenticator.issuer must be an http(s) URL, not {value!r}")
        return value

    @validate("enable_pkce")
    def _check_pkce(self, proposal):
        if not proposal["value"]:
            raise ValueError("OIDCAuthenticator.enable_pkce cannot be turned off: daas-hub always uses PKCE")
        return True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._discovery: dict | None = None
        self._jwks: dict | None = None
        self._discovered_at = 0.0

    # -- discovery -------------------------------------------------------------

    def unavailable_error(self, e: Exception) -> web.HTTPError:
        contact = self.mapping.contact
        return _error(
            503,
            f"{self.login_service} is not answering right now, so you cannot sign in with it. "
            f"Nothing was changed. Please try again in a few minutes, or sign in another way if "
            f"this page offers one; if it persists, tell {contact}.",
            f"{self.login_service} unavailable: {e}",
        )

    async def _get_json(self, url: str, what: str) -> dict:
        req = HTTPRequest(url, connect_timeout=self.discovery_timeout, request_timeout=self.discovery_timeout,
                          validate_cert=self.validate_server_cert)
        try:
            resp = await self.http_client.fetch(req)
            return json.loads(resp.body)
        except (HTTPClientError, OSError, ValueError) as e:
            raise ProviderUnavailable(f"{what} at {url}: {e}") from None

    async def discover(self, *, force: bool = False, recheck: bool = False) -> dict:
        """Read (or reuse) the discovery document and keys; set the endpoints.

        ``recheck``: read the discovery document again even when it is fresh (each
        login does, so that a provider that went down gets the hub's clear page
        rather than the browser's connection error); keys are re-read only when
        older than ``discovery_max_age`` or with ``force``.
        """
        fresh = time.monotonic() - self._discovered_at < self.discovery_max_age
        if self._discovery is not None and fresh and not (force or recheck):
            return self._discovery
        if not self.issuer:
            raise ProviderUnavailable("no issuer is configured")
        doc = await self._get_json(discovery_url(self.issuer), "discovery document")
        if not same_issuer(doc.get("issuer"), self.issuer):
            raise ProviderUnavailable(
                f"the discovery document names issuer {doc.get('issuer')!r}, not {self.issuer!r}"
            )
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not doc.get(k)]
        if missing:
            raise ProviderUnavailable(f"the discovery document lacks {', '.join(missing)}")
        methods = doc.get("code_challenge_methods_supported")
        if methods is not None and "S256" not in methods:
            self.log.warning("%s does not announce PKCE S256 support; using it anyway", self.issuer)
        if force or not fresh or self._jwks is None:
            self._jwks = await self._get_json(doc["jwks_uri"], "signing keys")
            self._discovered_at = time.monotonic()
        self.authorize_url = doc["authorization_endpoint"]
        self.token_url = doc["token_endpoint"]
        if doc.get("userinfo_endpoint"):
            self.userdata_url = doc["userinfo_endpoint"]
        self._discovery = doc
        return doc

    # -- ID token and nonce ------------------------------------------------------

    async def get_token_info(self, handler, params):
        try:
            await self.discover()
            token_info = await super().get_token_info(handler, params)
        except (ProviderUnavailable, OSError) as e:  # OSError: connection refused, reset, DNS
            raise self.unavailable_error(e) from None
        except HTTPClientError as e:
            if e.code == 599 or e.code >= 500:
                raise self.unavailable_error(e) from None
            raise _error(
                403,
                f"{self.login_service} refused to complete this sign-in (the one-time code was "
                f"already used, has expired, or was not issued to this hub). You are not signed in. "
                f"Go back to the login page and sign in again.",
                f"token request refused: HTTP {e.code}",
            ) from None
        if params.get("grant_type") == "authorization_code":
            cookie_state = handler.get_state_cookie() if handler is not None else ""
            nonce = _deserialize_state(cookie_state).get("nonce") if cookie_state else None
            await self.check_id_token(token_info.get("id_token"), nonce)
        return token_info

    async def check_id_token(self, id_token: str | None, nonce: str | None) -> dict:
        """Verify the ID token: signature, issuer, audience, expiry and nonce."""
        def refuse(why):
            return _error(
                403,
                f"The answer from {self.login_service} could not be verified, so you are not signed "
                f"in. Go back to the login page and sign in again; if it persists, tell "
                f"{self.mapping.contact}.",
                f"ID token refused: {why}",
            )

        if not id_token:
            raise refuse("the token response has no id_token (is the 'openid' scope requested?)")
        if not nonce:
            raise refuse("no nonce in the state cookie")
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as e:
            raise refuse(f"malformed: {e}") from None
        algorithm = header.get("alg")
        if algorithm not in SAFE_ALGORITHMS:
            raise refuse(f"algorithm {algorithm!r} is not accepted")
        key = self._signing_key(header.get("kid"), algorithm)
        if key is None:
            await self.discover(force=True)  # keys may have rotated
            key = self._signing_key(header.get("kid"), algorithm)
        if key is None:
            raise refuse(f"no signing key {header.get('kid')!r} at the provider")
        try:
            claims = jwt.decode(
                id_token, key=key, algorithms=[algorithm], audience=self.client_id, issuer=self.token_issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]}, leeway=60,
            )
        except jwt.PyJWTError as e:
            raise refuse(str(e)) from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise refuse("nonce mismatch (a replayed or forged answer)")
        return claims

    @property
    def token_issuer(self) -> str:
        """The issuer ID tokens must name: the discovery document's exact string (slash and all)."""
        return (self._discovery or {}).get("issuer") or self.issuer

    def check_userinfo_subject(self, id_token: str | None, user_info: dict) -> None:
        """The userinfo answer must be about the ID token's subject (OpenID Connect Core 5.3.2)."""
        try:
            # the token was verified in get_token_info; only its subject is read here
            token_sub = jwt.decode(id_token or "", options={"verify_signature": False}).get("sub")
        except jwt.PyJWTError:
            token_sub = None
        info_sub = (user_info or {}).get("sub")
        if not token_sub or not isinstance(info_sub, str) or not secrets.compare_digest(info_sub, str(token_sub)):
            raise _error(
                403,
                f"The answer from {self.login_service} could not be verified, so you are not signed "
                f"in. Go back to the login page and sign in again; if it persists, tell "
                f"{self.mapping.contact}.",
                f"userinfo refused: its sub {info_sub!r} is not the ID token's sub {token_sub!r}",
            )

    def build_auth_state_dict(self, token_info, user_info):
        """Keep only what daas-hub uses: the claims (read once, at login) and the ID token (the
        logout hint). Access and refresh tokens are never stored: hub admins can read auth_state."""
        self.check_userinfo_subject(token_info.get("id_token"), user_info)
        return {"id_token": token_info.get("id_token"), self.user_auth_state_key: user_info}

    def _signing_key(self, kid: str | None, algorithm: str):
        for jwk in (self._jwks or {}).get("keys", []):
            if kid is not None and jwk.get("kid") != kid:
                continue
            if jwk.get("use", "sig") != "sig":
                continue
            try:
                return jwt.PyJWK(jwk, algorithm=algorithm).key
            except jwt.PyJWTError:
                continue
        return None

    # -- identity -> account -> proposals -----------------------------------------

    def get_callback_url(self, handler=None):
        if self.oauth_callback_url:
            return self.oauth_callback_url
        if handler is None:
            raise ValueError("Set oauth_callback_url, or give a handler to guess the callback URL from")
        base = f"{handler.request.protocol}://{handler.request.host}"
        return base + url_path_join(handler.hub.server.base_url, self.url_prefix, "oauth_callback")

    def login_url(self, base_url):
        return url_path_join(base_url, self.url_prefix, "oauth_login")

    def get_handlers(self, app):
        return [
            (url_path_join("/", self.url_prefix, "oauth_login"), self.login_handler),
            (url_path_join("/", self.url_prefix, "oauth_callback"), self.callback_handler),
        ]

    def identity(self, user_info: dict) -> Identity:
        sub = str(user_info.get("sub") or "")
        email = user_info.get("email") if email_verified(user_info) else None
        if self.link_by == "umbrella_id":
            return Identity(provider=Provider.UMBRELLA, subject=sub, email=email, issuer=self.token_issuer)
        claimed = user_info.get(self.username_claim) if isinstance(self.username_claim, str) else None
        return Identity(provider=Provider.FACILITY, subject=sub, username=claimed and str(claimed), email=email,
                        issuer=self.token_issuer)

    def idp_roles(self, user_info: dict) -> frozenset[str]:
        roles = {role for role, claim in self.role_claims.items() if user_info.get(claim)}
        groups = user_info.get(self.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        for role, wanted in self.role_groups.items():
            if set(wanted) & set(groups):
                roles.add(role)
        return frozenset(roles)

    async def update_auth_model(self, auth_model):
        state = auth_model["auth_state"]
        user_info = state[self.user_auth_state_key]
        identity = self.identity(user_info)
        if not identity.subject:
            raise _error(403, f"{self.login_service} did not say who you are (no 'sub' claim).")
        who = identity.email or (f"{identity.username}" if identity.username else f"subject {identity.subject}")
        who = f"{who} ({self.login_service})"
        model = await self.mapping.auth_model(identity, who=who, idp_roles=self.idp_roles(user_info))
        model["auth_state"] = {**model["auth_state"], LOGIN_KEY: self._login_record(state)}
        # admin follows the account's roles at every login (None would keep a revoked admin)
        model["admin"] = bool(model["admin"]) or model["name"] in self.admin_users
        return model

    def _login_record(self, state: dict) -> dict:
        """What logout needs: which provider, where it ends sessions, the id_token hint."""
        return {
            "provider": self.url_prefix,
            "end_session_endpoint": (self._discovery or {}).get("end_session_endpoint"),
            "id_token": state.get("id_token"),
        }

    async def get_user_groups(self, auth_state: dict):
        """One group per proposal, from the mapping's entry in auth_state."""
        known = read_auth_state(auth_state)
        if known is None:
            return set()
        account, proposals = known
        return set(proposal_groups(proposals, account.username))

    async def check_allowed(self, username, auth_model):
        # refusals (no account, no proposal) were raised with their reason in update_auth_model
        return auth_model is None or STATE_KEY in (auth_model.get("auth_state") or {})

    async def run_post_auth_hook(self, handler, authentication):
        authentication = await super().run_post_auth_hook(handler, authentication)
        user = handler.find_user(authentication["name"]) if handler is not None else None
        if user is not None:
            old = await user.get_auth_state()
            authentication["auth_state"] = carry_forward(old, authentication.get("auth_state"))
        return authentication

    async def refresh_user(self, user, handler=None, **kwargs):
        """Re-read the proposals (not the provider's tokens) every ``auth_refresh_age``.

        The hub session's own lifetime is the hub cookie's; the provider is asked
        again only at the next login.
        """
        state = await user.get_auth_state()
        if not state:
            return False
        fresh = await self.mapping.refresh(state, name=user.name)
        if fresh is False:
            return False
        fresh["auth_state"] = kept_auth_state({**state, **fresh["auth_state"]})
        return fresh

    def check_allow_config(self):
        self.mapping.check()
        if not self.issuer:
            raise ValueError(f"{type(self).__name__}.issuer is not set: give the provider's issuer URL")
        if not self.client_id:
            raise ValueError(f"{type(self).__name__}.client_id is not set for {self.issuer}")


def discovery_url(issuer: str) -> str:
    """``<issuer>/.well-known/openid-configuration`` (OpenID Connect Discovery 4), one slash."""
    return f"{issuer.rstrip('/')}/.well-known/openid-configuration"


def same_issuer(announced, configured: str) -> bool:
    """The discovery document's issuer is the configured one (a trailing slash aside)."""
    return isinstance(announced, str) and bool(announced) and announced.rstrip("/") == configured.rstrip("/")


def email_verified(user_info: dict) -> bool:
    """Only an explicit ``email_verified: true`` counts; a missing claim is not verified."""
    value = user_info.get("email_verified")
    return value is True or (isinstance(value, str) and value.lower() == "true")


#: the auth_state keys daas-hub writes and reads; anything else (old provider tokens) is dropped
KEPT_STATE_KEYS = frozenset({STATE_KEY, LOGIN_KEY, CONDITIONS_KEY})


def kept_auth_state(state: dict) -> dict:
    """``state`` without what daas-hub does not use (e.g. tokens stored by daas-hub 0.1.0)."""
    return {k: v for k, v in state.items() if k in KEPT_STATE_KEYS}


def provider_logout_url(login_record: dict | None, post_logout_redirect_uri: str, client_id: str) -> str | None:
    """The provider's end-session URL for RP-initiated logout, or None."""
    endpoint = (login_record or {}).get("end_session_endpoint")
    if not endpoint:
        return None
    params = {"post_logout_redirect_uri": post_logout_redirect_uri, "client_id": client_id}
    if (login_record or {}).get("id_token"):
        params["id_token_hint"] = login_record["id_token"]
    sep = "&" if "?" in endpoint else "?"
    return f"{endpoint}{sep}{urlencode(params)}"


__all__ = ["LOGIN_KEY", "OIDCAuthenticator", "ProviderUnavailable", "provider_logout_url"]
