"""The OpenID Connect pieces without a network: ID token checks, claims -> identity
and roles, the conditions record, the provider settings.

The ID tokens are signed here with a freshly generated RSA key, the way a
provider signs them; the browser tests (test_login_oidc.py) run the whole flow
against a real provider.
"""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado import web

from daas_hub.authenticators.conditions import CONDITIONS_KEY, ConditionsOfUse, _local_path, carry_forward
from daas_hub.authenticators.multi import MultiAuthenticator
from daas_hub.authenticators.oidc import (
    OIDCAuthenticator,
    discovery_url,
    kept_auth_state,
    provider_logout_url,
    same_issuer,
)
from daas_hub.demo import site_settings
from daas_hub.errors import SettingsError, SourceUnavailable
from daas_hub.settings import parse_settings

ISSUER = "https://idp.example.org/realms/facility"


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_authenticator(key, **kwargs) -> OIDCAuthenticator:
    a = OIDCAuthenticator(issuer=ISSUER, client_id="daas-hub", **kwargs)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    a._jwks = {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}
    a._discovery = {"issuer": ISSUER}
    a._discovered_at = time.monotonic()
    return a


def token(key, *, alg="RS256", kid="k1", **overrides) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "daas-hub", "sub": "s-1", "iat": now, "exp": now + 300, "nonce": "n-1"}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    if alg == "none":
        return jwt.encode(claims, None, algorithm="none")
    if alg == "HS256":
        return jwt.encode(claims, "shared-secret-that-is-long-enough-for-hmac", algorithm="HS256", headers={"kid": kid})
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def test_valid_id_token_is_accepted(key):
    claims = asyncio.run(make_authenticator(key).check_id_token(token(key), "n-1"))
    assert claims["sub"] == "s-1"


@pytest.mark.parametrize(
    ("overrides", "nonce", "log"),
    [
        ({}, "other-nonce", "nonce mismatch"),
        ({"nonce": None}, "n-1", "nonce mismatch"),
        ({}, None, "no nonce in the state cookie"),
        ({"aud": "someone-else"}, "n-1", "Audience"),
        ({"iss": "https://evil.example.org"}, "n-1", "issuer"),
        ({"exp": int(time.time()) - 3600}, "n-1", "expired"),
        ({"alg": "none"}, "n-1", "algorithm 'none' is not accepted"),
        ({"alg": "HS256"}, "n-1", "algorithm 'HS256' is not accepted"),
    ],
)
def test_bad_id_tokens_are_refused_with_a_readable_page(key, overrides, nonce, log):
    a = make_authenticator(key)
    alg = overrides.pop("alg", "RS256")
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(a.check_id_token(token(key, alg=alg, **overrides), nonce))
    err = info.value
    assert err.status_code == 403
    assert log.lower() in (err.log_message % err.args).lower()
    assert "you are not signed in" in err.jupyterhub_message


def test_token_signed_by_another_key_is_refused(key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    a = make_authenticator(key)

    async def no_network(**kwargs):  # the key refresh finds the same keys
        return a._discovery

    a.discover = no_network
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(a.check_id_token(token(other), "n-1"))
    assert "Signature verification failed" in info.value.log_message % info.value.args


@pytest.mark.parametrize(
    ("link_by", "user_info", "provider", "username"),
    [
        # UmbrellaID: only the subject counts, whatever username the person chose
        ("umbrella_id", {"sub": "u-1", "preferred_username": "dave"}, "umbrella", None),
        ("username", {"sub": "f-1", "preferred_username": "dave"}, "facility", "dave"),
        ("username", {"sub": "f-2"}, "facility", None),
    ],
)
def test_identity_from_claims(key, link_by, user_info, provider, username):
    identity = make_authenticator(key, link_by=link_by).identity(user_info)
    assert (identity.provider, identity.subject, identity.username) == (provider, user_info["sub"], username)


def test_unverified_email_is_not_used(key):
    a = make_authenticator(key, link_by="umbrella_id")
    assert a.identity({"sub": "u", "email": "x@y", "email_verified": False}).email is None
    assert a.identity({"sub": "u", "email": "x@y", "email_verified": True}).email == "x@y"
    # a missing claim is not a verification (a self-service provider may let anyone set any email)
    assert a.identity({"sub": "u", "email": "x@y"}).email is None
    assert a.identity({"sub": "u", "email": "x@y", "email_verified": "yes"}).email is None
    assert a.identity({"sub": "u", "email": "x@y", "email_verified": "true"}).email == "x@y"


@pytest.mark.parametrize("link_by", ["umbrella_id", "username"])
def test_identity_is_issuer_and_subject(key, link_by):
    identity = make_authenticator(key, link_by=link_by).identity({"sub": "u-1", "preferred_username": "a"})
    assert (identity.issuer, identity.subject) == (ISSUER, "u-1")


def test_two_umbrella_id_issuers_are_refused():
    entry = {"link_by": "umbrella_id", "client_id": "c"}
    with pytest.raises(Exception, match="only one issuer may link by umbrella_id"):
        MultiAuthenticator(providers=[{"name": "a", "issuer": "https://a.example/", **entry},
                                      {"name": "b", "issuer": "https://b.example", **entry}])
    MultiAuthenticator(providers=[{"name": "a", "issuer": "https://a.example/", **entry},
                                  {"name": "b", "issuer": "https://a.example", **entry}])


def test_an_issuer_ending_in_a_slash_signs_in(key):
    """The discovery URL has one slash; the ID token's iss is compared with the exact issuer."""
    issuer = ISSUER + "/"
    a = make_authenticator(key, link_by="umbrella_id")
    a.issuer = issuer
    assert a.issuer == issuer
    a._discovery = {"issuer": issuer}
    assert discovery_url(issuer) == f"{ISSUER}/.well-known/openid-configuration"
    assert same_issuer(issuer, ISSUER) and same_issuer(ISSUER, issuer) and not same_issuer(None, issuer)
    claims = asyncio.run(a.check_id_token(token(key, iss=issuer), "n-1"))
    assert claims["iss"] == issuer


def test_userinfo_about_another_subject_is_refused(key):
    """OpenID Connect Core 5.3.2: the userinfo sub must be the ID token's."""
    a = make_authenticator(key)
    id_token = token(key, sub="s-1")
    with pytest.raises(web.HTTPError) as info:
        a.build_auth_state_dict({"access_token": "at", "id_token": id_token}, {"sub": "s-2"})
    assert info.value.status_code == 403 and "you are not signed in" in info.value.jupyterhub_message
    assert "not the ID token's sub" in info.value.log_message % info.value.args
    for user_info in ({}, {"sub": 7}):
        with pytest.raises(web.HTTPError):
            a.build_auth_state_dict({"access_token": "at", "id_token": id_token}, user_info)


def test_provider_tokens_are_not_kept(key):
    a = make_authenticator(key)
    id_token = token(key, sub="s-1")
    state = a.build_auth_state_dict(
        {"access_token": "at", "refresh_token": "rt", "id_token": id_token, "scope": "openid"}, {"sub": "s-1"})
    assert state == {"id_token": id_token, "oauth_user": {"sub": "s-1"}}
    old = {"access_token": "at", "refresh_token": "rt", "token_response": {}, "oauth_user": {}, "daas": {},
           "daas_login": {}, CONDITIONS_KEY: {}}
    assert set(kept_auth_state(old)) == {"daas", "daas_login", CONDITIONS_KEY}


@pytest.mark.parametrize(
    ("user_info", "roles"),
    [
        ({"groups": ["facility-staff"]}, {"staff"}),
        ({"groups": "trainers"}, {"instructor"}),
        ({"groups": ["daas-admins", "facility-staff"]}, {"admin", "staff"}),
        ({"is_staff": True}, {"staff"}),
        ({"is_staff": False, "groups": []}, set()),
        ({}, set()),
    ],
)
def test_roles_from_claims_and_groups(key, user_info, roles):
    a = make_authenticator(
        key, role_claims={"staff": "is_staff"},
        role_groups={"staff": ["facility-staff"], "admin": ["daas-admins"], "instructor": ["trainers"]},
    )
    assert a.idp_roles(user_info) == roles


def test_pkce_cannot_be_turned_off(key):
    with pytest.raises(ValueError, match="PKCE"):
        make_authenticator(key, enable_pkce=False)


def test_conditions_record_survives_a_new_login():
    old = {"daas": {"proposals": []}, CONDITIONS_KEY: {"version": "1", "accepted_at": "2026-11-01T00:00:00+00:00"}}
    new = {"daas": {"proposals": ["X"]}}
    assert carry_forward(old, new) == {**new, CONDITIONS_KEY: old[CONDITIONS_KEY]}
    assert carry_forward(None, new) == new
    c = ConditionsOfUse(version="2")
    assert not c.accepted(carry_forward(old, new)), "a new version is asked again"
    assert ConditionsOfUse(version="1").accepted(carry_forward(old, new))
    assert ConditionsOfUse().accepted(None), "no conditions configured: nothing to accept"


@pytest.mark.parametrize(
    ("next_url", "expected"),
    [("/hub/spawn", "/hub/spawn"), ("https://evil.example/x", "/d"), ("//evil.example/x", "/d"),
     ("\\\\evil.example", "/d"), ("", "/d")],
)
def test_conditions_next_stays_on_the_hub(next_url, expected):
    assert _local_path(next_url, "/d") == expected


def test_provider_logout_url():
    record = {"end_session_endpoint": "https://idp/logout", "id_token": "T"}
    url = provider_logout_url(record, "https://hub/hub/login", "c")
    assert url == "https://idp/logout?post_logout_redirect_uri=https%3A%2F%2Fhub%2Fhub%2Flogin&client_id=c&id_token_hint=T"
    assert provider_logout_url({"end_session_endpoint": None}, "x", "c") is None


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        ([{"name": "Umbrella"}], "lowercase"),
        ([{"name": "a"}, {"name": "a"}], "already taken"),
        ([{"name": "logout"}], "already taken"),
        ([{"name": "a", "clientid": "x"}], "unknown key"),
    ],
)
def test_multi_rejects_bad_provider_entries(providers, message):
    with pytest.raises(Exception, match=message):
        MultiAuthenticator(providers=providers)


def test_multi_children_get_their_prefix_and_label():
    m = MultiAuthenticator(providers=[
        {"name": "umbrella", "label": "UmbrellaID", "issuer": "https://u", "client_id": "a", "link_by": "umbrella_id"},
        {"name": "facility", "label": "your facility account", "issuer": "https://f", "client_id": "b"},
    ])
    html = m.get_custom_html("/hub/")
    assert "Sign in with UmbrellaID" in html and "Sign in with your facility account" in html
    assert "/hub/umbrella/oauth_login" in html and "/hub/facility/oauth_login" in html
    paths = [route[0] for route in m.get_handlers(None)]
    assert paths == ["/umbrella/oauth_login", "/umbrella/oauth_callback", "/facility/oauth_login",
                     "/facility/oauth_callback", "/conditions", "/logout"]
    assert m.provider("umbrella").username_claim == "sub"
    assert m.provider("facility").username_claim == "preferred_username"


def oidc_doc(**login):
    doc = copy.deepcopy(site_settings("http://127.0.0.1:8000"))
    doc["demo"] = False
    doc["login"] = {"kind": "oidc", "providers": [
        {"name": "umbrella", "label": "UmbrellaID", "issuer": "https://u.example", "client_id": "c",
         "link_by": "umbrella_id", "client_secret_file": "secret"}], **login}
    return doc


def test_oidc_settings_parse(tmp_path):
    s = parse_settings(oidc_doc(refresh_age=60, conditions_of_use={"version": "1", "file": "c.txt"}),
                       tmp_path / "site.yaml")
    assert s.login_kind == "oidc"
    assert s.login_providers[0]["client_secret_file"] == str(tmp_path.resolve() / "secret")
    assert (s.refresh_age, s.conditions_version, s.conditions_file) == (60, "1", str(tmp_path.resolve() / "c.txt"))


@pytest.mark.parametrize(
    ("login", "entry"),
    [
        ({"providers": []}, "login > providers"),
        ({"kind": "oidc", "providers": None}, "login"),
    ],
)
def test_oidc_settings_without_providers_are_refused(tmp_path, login, entry):
    doc = oidc_doc()
    doc["login"].update(login)
    if doc["login"]["providers"] is None:
        del doc["login"]["providers"]
    with pytest.raises(SettingsError) as info:
        parse_settings(doc, tmp_path / "site.yaml")
    assert entry in str(info.value)


def test_unknown_provider_key_is_refused(tmp_path):
    doc = oidc_doc()
    doc["login"]["providers"][0]["client_secret"] = "in the settings file"
    with pytest.raises(SettingsError, match="client_secret"):
        parse_settings(doc, tmp_path / "site.yaml")


def test_missing_client_secret_file_stops_the_hub_with_a_clear_message(tmp_path, monkeypatch):
    from traitlets.config import Config

    from daas_hub.config import configure_oidc

    s = parse_settings(oidc_doc(), tmp_path / "site.yaml")
    with pytest.raises(SettingsError) as info:
        configure_oidc(Config(), s)
    assert "client_secret_file" in str(info.value) and "cannot read" in str(info.value)


class _Unavailable:
    """A proposal source whose catalogue does not answer."""

    async def resolve_account(self, identity):
        raise SourceUnavailable("ICAT at https://icat.example.org: connection refused")

    async def proposals_for(self, account):
        raise SourceUnavailable("ICAT: connection refused")


def test_catalogue_outage_keeps_last_proposals_and_when_they_were_read():
    from daas_hub.access import make_auth_state, read_auth_state
    from daas_hub.authenticators.mapping import ProposalMapping
    from daas_hub.model import Account, Member, Proposal

    account = Account("bob", roles=frozenset({"user"}))
    proposal = Proposal("MX-1001", "t", "ID11", "F", members=(Member("bob"),))
    then = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    state = {**make_auth_state(account, [proposal], now=then), CONDITIONS_KEY: {"version": "1"}}
    mapping = ProposalMapping()
    mapping.source = _Unavailable()
    fresh = asyncio.run(mapping.refresh(state, name="bob"))
    entry = fresh["auth_state"]["daas"]
    assert entry["stale"] is True and entry["fetched_at"] == then.isoformat()
    assert read_auth_state(fresh["auth_state"])[1] == [proposal]
    assert fresh["auth_state"][CONDITIONS_KEY] == {"version": "1"}, "nothing else in auth_state is lost"


class _User:
    def __init__(self, state):
        self._state = state

    async def get_auth_state(self):
        return self._state


@pytest.mark.parametrize("stale", [True, False])
def test_home_page_says_when_proposals_are_stale(stale):
    """The hub's home.html, rendered the way JupyterHub does (async Jinja), on a stub base page."""
    from importlib import resources

    from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader, PrefixLoader

    from daas_hub.access import make_auth_state
    from daas_hub.model import Account

    env = Environment(
        loader=ChoiceLoader([
            FileSystemLoader(str(resources.files("daas_hub").joinpath("templates"))),
            PrefixLoader({"templates": DictLoader({"home.html": "{% block main %}[home]{% endblock %}"})}),
        ]),
        autoescape=True, enable_async=True,
    )
    state = make_auth_state(Account("bob"), [], now=datetime(2026, 11, 21, 8, 0, tzinfo=UTC), stale=stale)
    html = asyncio.run(env.get_template("home.html").render_async(
        user=_User(state), daas_facility="DEMO Light Source", daas_contact="the User Office"))
    assert "[home]" in html
    assert ("did not answer" in html and "2026-11-21 08:00 UTC" in html) is stale


def test_provider_down_during_code_exchange_gives_a_clear_page(key):
    """The provider answered the login but is gone when the hub redeems the code
    (a closed loopback port stands in for it)."""
    from conftest import free_port

    a = make_authenticator(key, discovery_timeout=5)
    a.token_url = f"http://127.0.0.1:{free_port()}/token"

    class Handler:
        request = type("R", (), {"protocol": "http", "host": "127.0.0.1:1"})()
        hub = type("H", (), {"server": type("S", (), {"base_url": "/hub/"})()})()

        def get_state_cookie(self):
            return ""

    params = {"code": "c", "grant_type": "authorization_code", "redirect_uri": "x"}
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(a.get_token_info(Handler(), params))
    assert info.value.status_code == 503
    assert "is not answering right now" in info.value.jupyterhub_message
