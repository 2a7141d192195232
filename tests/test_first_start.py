"""Sessions for people who never signed in: proposals read from the source.

The unit half uses the demo login over a real YAML proposal file, and a small
in-memory stand-in for JupyterHub's ``User`` (auth_state and groups only: the
two things the spawner writes). The hub half starts a server through the REST
API for a user an admin created, on the real demo hub.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import yaml
from jupyterhub.auth import Authenticator
from traitlets.config import Config

from daas_hub.access import LoginPolicy
from daas_hub.authenticators.demo import DemoAuthenticator
from daas_hub.spawners.common import checked_account
from daas_hub.spawners.first_start import lookup_for

LOG = logging.getLogger("test-first-start")

DOC = {
    "facility": "DEMO Light Source",
    "accounts": [
        {"username": "alice"},
        {"username": "erin"},
        {"username": "ivan", "roles": ["training"]},
    ],
    "proposals": [
        {"id": "MX-1", "title": "Cathodes", "instrument": "ID11", "members": [{"username": "alice", "role": "pi"}]},
    ],
}


class UserRecord:
    """What the spawner reads and writes on a JupyterHub user: auth_state and groups."""

    def __init__(self, name, state=None):
        self.name = name
        self.state = state
        self.groups = None

    async def get_auth_state(self):
        return self.state

    async def save_auth_state(self, state):
        self.state = state

    def sync_groups(self, names):
        self.groups = sorted(names)


@pytest.fixture
def proposals_file(tmp_path):
    path = tmp_path / "proposals.yaml"
    path.write_text(yaml.safe_dump(DOC))
    return path


@pytest.fixture
def login(proposals_file):
    path = proposals_file
    c = Config()
    c.ProposalMapping.facility_name = "DEMO Light Source"
    c.ProposalMapping.contact = "the user office"
    c.YamlProposalSource.path = str(path)
    return DemoAuthenticator(config=c)


def run(coro):
    return asyncio.run(coro)


def test_every_daas_login_publishes_its_lookup_and_other_logins_none(login):
    assert lookup_for(login) == login.proposal_lookup
    assert lookup_for(Authenticator()) is None


def test_lookup_reads_the_account_and_its_proposal_groups(login):
    model = run(login.proposal_lookup("alice"))
    assert model["groups"] == ["proposal-MX-1"]
    assert [p["id"] for p in model["auth_state"]["daas"]["proposals"]] == ["MX-1"]
    assert "admin" not in model  # admin rights follow the person's own login only
    assert run(login.proposal_lookup("nobody")) is None


def test_a_user_who_never_signed_in_gets_their_proposals_kept_in_auth_state(login, proposals_file):
    user = UserRecord("alice")
    account, proposals = run(checked_account(user, login.login_policy, lookup=login.proposal_lookup, log=LOG,
                                             manage_groups=True))
    assert account.username == "alice" and [p.id for p in proposals] == ["MX-1"]
    assert user.state["daas"]["account"]["username"] == "alice"
    assert user.groups == ["proposal-MX-1"]
    # the next start reads auth_state, not the source
    proposals_file.write_text(yaml.safe_dump({**DOC, "proposals": []}))
    again = run(checked_account(user, login.login_policy, lookup=login.proposal_lookup, log=LOG))
    assert [p.id for p in again[1]] == ["MX-1"]


def test_a_training_account_without_proposal_is_allowed(login):
    user = UserRecord("ivan")
    account, proposals = run(checked_account(user, login.login_policy, lookup=login.proposal_lookup, log=LOG))
    assert account.roles == frozenset({"training"}) and proposals == []


def refusal(login, name, **kwargs):
    from daas_hub.spawners.common import SpawnException

    user = UserRecord(name, state=kwargs.pop("state", None))
    with pytest.raises(SpawnException) as err:
        run(checked_account(user, login.login_policy, log=LOG, **kwargs))
    return err.value, user


@pytest.mark.parametrize("name,lookup,reason,words", [
    ("nobody", True, "no-account", "nobody has not signed in yet and is not an account of DEMO Light Source"),
    ("erin", True, "no-proposal", "not on any proposal at DEMO Light Source"),
    ("alice", False, "no-auth-state", "Please log out and sign in again"),
])
def test_refusals_are_sentences_and_keep_nothing(login, name, lookup, reason, words):
    err, user = refusal(login, name, lookup=login.proposal_lookup if lookup else None)
    assert err.reason == reason
    assert words in err.jupyterhub_message
    assert "Traceback" not in err.jupyterhub_message
    if reason != "no-proposal":
        assert user.state is None and user.groups is None


def test_catalogue_down_at_a_first_start_is_a_sentence(login, proposals_file):
    proposals_file.unlink()
    err, user = refusal(login, "alice", lookup=login.proposal_lookup)
    assert err.reason == "source-unavailable"
    assert "did not answer" in err.jupyterhub_message and "the user office" in err.jupyterhub_message
    assert user.state is None


def test_another_login_keeps_the_old_refusal():
    err, _ = refusal(DemoAuthenticator(), "alice", lookup=lookup_for(Authenticator()))
    assert err.reason == "no-auth-state"
    assert LoginPolicy().contact


@pytest.mark.hub
def test_admin_starts_a_server_for_a_user_who_never_signed_in(hub):
    """An admin (the test service) creates bob and starts his server through the REST API."""
    if hub.api("GET", "/users/bob").status_code == 200:
        hub.stop_server("bob")
        assert hub.api("DELETE", "/users/bob").status_code == 204
    assert hub.api("POST", "/users/bob").status_code == 201
    r = hub.api("POST", "/users/bob/server", json={})
    assert r.status_code in (201, 202), r.text
    try:
        hub.wait_ready("bob")
        model = hub.api("GET", "/users/bob").json()
        assert set(model["groups"]) == {"proposal-MX-1001", "proposal-EC-2002"}
        r = hub.server_api("bob", "GET", "/contents/proposals")
        # (other tests may leave folders of bob's removed proposals: only these two must be there)
        assert {"MX-1001", "EC-2002"} <= {c["name"] for c in r.json()["content"]}
    finally:
        hub.stop_server("bob")
    assert "has not signed in yet: read their account and proposals" in hub.log_text()


@pytest.mark.hub
def test_a_name_with_no_account_is_refused_with_a_sentence(hub):
    hub.api("POST", "/users/zoe")
    try:
        r = hub.api("POST", "/users/zoe/server", json={})
        assert r.status_code == 403, r.text  # refused at once, before anything started
        assert r.json()["message"].startswith("zoe has not signed in yet and is not an account of DEMO Light Source")
        assert "Traceback" not in r.text
        assert not hub.api("GET", "/users/zoe").json()["servers"]
    finally:
        hub.api("DELETE", "/users/zoe")
