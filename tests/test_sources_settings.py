"""Site settings for the proposal source kinds (icat, scicat, sql, chain, cache),
how they wire the traitlets, and how ProposalMapping tells a stale answer apart."""

from __future__ import annotations

import copy

import pytest
from traitlets.config import Config

from daas_hub.access import LoginPolicy, read_auth_state
from daas_hub.authenticators.mapping import ProposalMapping
from daas_hub.config import apply_settings
from daas_hub.errors import SettingsError, SourceUnavailable
from daas_hub.model import Account, Identity, Member, MemberRole, Proposal
from daas_hub.settings import parse_settings
from daas_hub.sources import (
    CachedProposalSource,
    ChainedProposalSource,
    IcatProposalSource,
    ProposalSource,
    SqlProposalSource,
    YamlProposalSource,
)
from daas_hub.sources.factory import build_source, source_config

ICAT = {"kind": "icat", "url": "https://icat.example.org", "auth": "db", "reader_username": "reader",
        "password_file": "secrets/icat", "facility": "ESRF", "instruments": ["ID01"],
        "raw_template": "/data/visitor/{name}/{instrument}", "cache": {"ttl": 120, "stale_for": 3600}}
SQL = {"kind": "sql", "url": "postgresql+psycopg://reader@db/uo", "password_file": "/etc/pw",
       "account_query": "SELECT login AS username FROM users WHERE login = :username",
       "proposals_query": "SELECT code AS id, title FROM proposals WHERE login = :username"}


def site(source: dict) -> dict:
    return {"facility": {"name": "ESRF", "contact": "the User Office"}, "demo": True,
            "proposal_source": copy.deepcopy(source)}


def test_icat_settings_configure_a_cached_icat_source(tmp_path):
    settings = parse_settings(site(ICAT), tmp_path / "site.yaml")
    assert settings.source_options["password_file"] == str(tmp_path.resolve() / "secrets" / "icat")
    cls, config = source_config(settings.source_options)
    assert cls is CachedProposalSource
    assert config.CachedProposalSource.source_class is IcatProposalSource
    assert (config.CachedProposalSource.ttl, config.CachedProposalSource.stale_for) == (120, 3600)
    source = build_source(settings.source_options)
    inner = source.source
    assert isinstance(inner, IcatProposalSource)
    assert (inner.url, inner.auth, inner.reader_username, inner.instruments) == (
        "https://icat.example.org", "db", "reader", ["ID01"])
    assert inner.password_file == str(tmp_path.resolve() / "secrets" / "icat")


def test_the_yaml_source_stays_uncached_unless_asked(tmp_path):
    entry = parse_settings(site({"kind": "yaml", "path": "p.yaml"}), tmp_path / "s.yaml").source_options
    cls, config = source_config(entry)
    assert cls is YamlProposalSource and config.YamlProposalSource.path == str(tmp_path.resolve() / "p.yaml")
    cached, _ = source_config({**entry, "cache": {"ttl": 10}})
    assert cached is CachedProposalSource
    uncached, _ = source_config({**ICAT, "cache": {"enabled": False}})
    assert uncached is IcatProposalSource


def test_chain_sql_accounts_icat_and_yaml_proposals(tmp_path):
    entry = {"kind": "chain", "accounts": SQL,
             "proposals": [{k: v for k, v in ICAT.items() if k != "cache"}, {"kind": "yaml", "path": "training.yaml"}],
             "cache": {"ttl": 60}}
    settings = parse_settings(site(entry), tmp_path / "site.yaml")
    source = build_source(settings.source_options)
    assert isinstance(source, CachedProposalSource) and source.ttl == 60
    chain = source.source
    assert isinstance(chain, ChainedProposalSource)
    assert isinstance(chain.account_source, SqlProposalSource) and chain.account_source.url == SQL["url"]
    icat, training = chain.proposal_sources
    assert isinstance(icat, IcatProposalSource) and icat.facility == "ESRF"
    assert isinstance(training, YamlProposalSource) and training.path == str(tmp_path.resolve() / "training.yaml")


@pytest.mark.parametrize("source, entry, problem", [
    ({**ICAT, "password": "x"}, "proposal_source", "Additional properties are not allowed ('password'"),
    ({k: v for k, v in ICAT.items() if k != "url"}, "proposal_source", "'url' is a required property"),
    ({**ICAT, "url": "icat.example.org"}, "proposal_source > url", "does not match"),
    ({**ICAT, "data_location": "tape"}, "proposal_source > data_location", "'tape' is not one of"),
    ({"kind": "nope"}, "proposal_source > kind", "'nope' is not one of"),
    ({**SQL, "cache": {"ttl": -1}}, "proposal_source > cache > ttl", "less than the minimum"),
    ({**SQL, "cache": {"tll": 5}}, "proposal_source > cache", "Additional properties are not allowed ('tll'"),
    ({"kind": "chain", "accounts": {"kind": "scicat", "url": "https://s/api/v3"}}, "proposal_source > accounts",
     "'reader_username' is a required property"),
    ({"kind": "chain", "accounts": SQL, "extra": 1}, "proposal_source", "Additional properties are not allowed"),
    ({"kind": "sql", "url": "x"}, "proposal_source", "'account_query' is a required property"),
])
def test_refused_source_settings_name_the_entry(tmp_path, source, entry, problem):
    with pytest.raises(SettingsError) as e:
        parse_settings(site(source), tmp_path / "site.yaml")
    assert e.value.entry == entry
    assert problem in e.value.problem


def test_a_chain_inside_a_chain_is_refused():
    with pytest.raises(SettingsError, match="cannot be used here"):
        source_config({"kind": "chain", "accounts": {"kind": "chain", "accounts": SQL}})


def test_apply_settings_wires_the_mapping_to_the_configured_source(tmp_path):
    (tmp_path / "pw").write_text("secret\n")
    doc = site({**SQL, "password_file": "pw"})
    doc.update(login={"kind": "demo"}, hub={"data_dir": "hub"})
    settings = parse_settings(doc, tmp_path / "site.yaml")
    c = Config()
    apply_settings(c, settings)
    assert c.ProposalMapping.source_class is CachedProposalSource
    assert c.CachedProposalSource.source_class is SqlProposalSource
    mapping = ProposalMapping(config=c)
    assert isinstance(mapping.source, CachedProposalSource)
    assert mapping.source.source.account_query == SQL["account_query"]
    assert c.JupyterHub.template_vars["daas_demo_users"] == []
    assert c.JupyterHub.cleanup_servers is True  # local sessions are the hub's own children


@pytest.mark.parametrize("spawner, keep", [
    pytest.param({"backend": "local"}, False, id="local only: stopped with the hub"),
    pytest.param({"backend": "slurm", "backends": ["slurm", "local"]}, True, id="slurm: kept across restarts"),
])
def test_shipped_settings_keep_batch_sessions_across_a_hub_restart(tmp_path, demo_site, spawner, keep):
    doc = site({"kind": "yaml", "path": str(demo_site / "proposals.yaml")})
    doc.update(login={"kind": "demo"}, hub={"data_dir": "hub"}, spawner=spawner)
    c = Config()
    apply_settings(c, parse_settings(doc, tmp_path / "site.yaml"))
    assert c.JupyterHub.cleanup_servers is (not keep)


class Flaky(ProposalSource):
    down = False

    async def resolve_account(self, identity):
        if Flaky.down:
            raise SourceUnavailable("ICAT did not answer within 20 s")
        return Account(identity.username, roles=frozenset({"user"}))

    async def proposals_for(self, account):
        if Flaky.down:
            raise SourceUnavailable("ICAT did not answer within 20 s")
        return [Proposal("MX-1", "t", "ID30A", "ESRF", members=(Member(account.username, MemberRole.PI),))]


async def test_a_stale_answer_lets_people_in_and_is_marked_in_auth_state(caplog):
    c = Config()
    c.ProposalMapping.source_class = CachedProposalSource
    c.CachedProposalSource.source_class = Flaky
    c.CachedProposalSource.ttl = 0
    mapping = ProposalMapping(config=c)
    Flaky.down = False
    fresh = await mapping.auth_model(Identity("facility", "alice", username="alice"), name="alice")
    assert fresh["auth_state"]["daas"]["stale"] is False
    Flaky.down = True
    try:
        stale = await mapping.auth_model(Identity("facility", "alice", username="alice"), name="alice")
        assert stale["auth_state"]["daas"]["stale"] is True
        assert stale["groups"] == ["proposal-MX-1"]
        assert [p.id for p in read_auth_state(stale["auth_state"])[1]] == ["MX-1"]
        assert "last known proposals" in caplog.text
        refreshed = await mapping.refresh(fresh["auth_state"], name="alice")
        assert refreshed["auth_state"]["daas"]["stale"] is True
        # someone the cache never saw gets "catalogue unavailable" (503), not an empty list
        from tornado.web import HTTPError

        with pytest.raises(HTTPError) as e:
            await mapping.auth_model(Identity("facility", "bob", username="bob"), name="bob")
        assert e.value.status_code == 503
        assert "did not answer" in e.value.jupyterhub_message
    finally:
        Flaky.down = False


def test_the_stale_notice_tells_people_what_it_means():
    from daas_hub.access import make_auth_state, stale_notice

    account = Account("alice")
    assert stale_notice(make_auth_state(account, []), facility="ESRF") is None
    notice = stale_notice(make_auth_state(account, [], stale=True), facility="ESRF")
    assert notice.startswith("The proposal catalogue of ESRF is not answering")


async def test_the_spawn_progress_shows_the_stale_notice():
    from types import SimpleNamespace

    from daas_hub.access import make_auth_state
    from daas_hub.spawners.local import LocalSpawner

    state = {"value": make_auth_state(Account("alice"), [], stale=True)}

    async def get_auth_state():
        return state["value"]

    user = SimpleNamespace(name="alice", get_auth_state=get_auth_state, url="/user/alice/", escaped_name="alice",
                           id=1, server=None)
    # the facility's name comes from the login's published policy (one setting, shared)
    login = SimpleNamespace(login_policy=LoginPolicy(facility_name="ESRF", contact="the User Office"))
    spawner = LocalSpawner(user=user, authenticator=login)
    [event] = [e async for e in spawner.progress()]
    assert "proposal catalogue of ESRF is not answering" in event["message"]
    state["value"] = make_auth_state(Account("alice"), [])
    assert [e async for e in spawner.progress()] == []
