"""The login policy: published by every daas-hub login, received explicitly by the spawners."""

from __future__ import annotations

import logging

import pytest
from jupyterhub.auth import Authenticator
from traitlets.config import Config

from daas_hub.access import LoginPolicy
from daas_hub.authenticators.demo import DemoAuthenticator
from daas_hub.authenticators.multi import MultiAuthenticator
from daas_hub.model import Account, Identity, Provider
from daas_hub.sources.icat_source import IcatProposalSource
from daas_hub.sources.scicat_source import ScicatProposalSource
from daas_hub.spawners import common


def site_config() -> Config:
    c = Config()
    c.ProposalMapping.facility_name = "DEMO Light Source"
    c.ProposalMapping.contact = "the user office (uo@demo.invalid)"
    c.ProposalMapping.staff_without_proposal = False
    return c


def test_a_login_publishes_its_policy_from_the_mapping_settings():
    policy = DemoAuthenticator(config=site_config()).login_policy
    assert policy == LoginPolicy("DEMO Light Source", "the user office (uo@demo.invalid)", False)
    with pytest.raises(AttributeError):
        policy.contact = "someone else"  # frozen: nobody downstream changes it


def test_every_provider_of_a_multi_login_shares_one_policy():
    c = site_config()
    c.MultiAuthenticator.providers = [
        {"name": "umbrella", "issuer": "https://umbrella.invalid", "client_id": "x", "link_by": "umbrella_id"},
        {"name": "facility", "issuer": "https://sso.invalid", "client_id": "x"},
    ]
    multi = MultiAuthenticator(config=c)
    policies = {multi.login_policy, *(multi.provider(n).login_policy for n in ("umbrella", "facility"))}
    assert policies == {LoginPolicy("DEMO Light Source", "the user office (uo@demo.invalid)", False)}


def test_the_policy_decides_with_its_own_contact_and_staff_rule():
    policy = LoginPolicy("DEMO Light Source", "the user office", staff_without_proposal=False)
    decision = policy.decide(Account("dave", roles=frozenset({"staff"})), [], who="dave")
    assert (decision.allowed, decision.reason) == (False, "no-proposal")
    assert "the user office" in decision.message
    assert LoginPolicy().decide(Account("dave", roles=frozenset({"staff"})), [], who="dave").allowed


def test_spawners_under_another_authenticator_get_the_defaults_and_the_admin_is_told_once(caplog):
    class SiteLogin(Authenticator):
        pass

    log = logging.getLogger("test-policy")
    with caplog.at_level(logging.WARNING, logger="test-policy"):
        first = common.policy_for(SiteLogin(), log)
        second = common.policy_for(SiteLogin(), log)
    assert first == second == LoginPolicy()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "SiteLogin publishes no daas-hub login policy" in warnings[0]
    assert "ProposalLogin" in warnings[0]


def test_a_daas_login_policy_reaches_the_spawner_unchanged():
    login = DemoAuthenticator(config=site_config())
    assert common.policy_for(login) is not None
    assert common.policy_for(login) == login.login_policy


def test_provider_kinds_are_one_enum_and_compare_as_their_names():
    assert Identity(provider=Provider.UMBRELLA, subject="s").provider == "umbrella"
    assert {p.value for p in Provider} == {"umbrella", "facility", "demo"}


@pytest.mark.parametrize("make", [
    pytest.param(lambda: IcatProposalSource(identity_templates={"umbrela": "{email}"}), id="icat"),
    pytest.param(lambda: ScicatProposalSource(identity_fields={"umbrela": {"field": "x", "value": "{subject}"}}),
                 id="scicat"),
])
def test_a_misspelt_provider_kind_is_a_settings_error_at_load(make):
    with pytest.raises(ValueError, match="'umbrela' .*provider kind|\\['umbrela'\\] are not login provider kinds"):
        make()
