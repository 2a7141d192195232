"""The ICAT proposal source, against a stand-in for python-icat's Client.

No ICAT server (Payara + icat.server + a database) can be installed on the test
machine, and python-icat downloads the server's WSDL when a Client is created,
so these tests give the adapter a stand-in shaped like ``icat.client.Client``
(``login``, ``search``, ``refresh``, ``logout``, ``sessionId``) that asserts the
exact queries sent (including the quoting of a user name with a quote) and
answers with objects shaped like python-icat's entities. It raises python-icat's
own exception classes. tests/test_sources_icat_contract.py runs the same adapter
against a real ICAT when ICAT_TEST_URL is set.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from types import SimpleNamespace as E

import pytest
from icat.exception import ICATPrivilegesError, ICATSessionError

from daas_hub.errors import SettingsError, SourceUnavailable
from daas_hub.model import Account, Identity, MemberRole, ProposalState, UnsafeValue
from daas_hub.sources import IcatProposalSource
from daas_hub.sources.icat_source import investigations_query, jpql_string

INV_INCLUDE = "INCLUDE i.facility, i.investigationInstruments.instrument, i.investigationUsers.user"


class StandInClient:
    """Shaped like icat.client.Client; ``answers`` maps an exact query to its result."""

    instances: list[StandInClient] = []

    def __init__(self, url, **kwargs):
        self.url, self.kwargs = url, kwargs
        self.sessionId = None
        self.answers: dict[str, list] = {}
        self.queries: list[str] = []
        self.calls: list[str] = []
        self.expire_next = 0  # how many searches fail with an expired session
        self.gate: threading.Event | None = None  # searches wait for it (a slow ICAT)
        self.privileges = False
        self.threads: set[str] = set()
        StandInClient.instances.append(self)

    def login(self, auth, credentials):
        self.calls.append(f"login {auth} {credentials['username']}")
        assert credentials == {"username": "reader", "password": "s3cret"}
        self.sessionId = f"session-{len(self.calls)}"
        return self.sessionId

    def refresh(self):
        self.calls.append("refresh")

    def logout(self):
        self.calls.append("logout")
        self.sessionId = None

    def search(self, query):
        self.threads.add(threading.current_thread().name)
        self.calls.append("search")
        self.queries.append(query)
        if self.gate is not None:
            self.gate.wait(30)
        if self.privileges:
            raise ICATPrivilegesError({"code": "INSUFFICIENT_PRIVILEGES", "message": "Read access to User denied"})
        if self.expire_next:
            self.expire_next -= 1
            raise ICATSessionError({"code": "SESSION", "message": "Unable to find user by sessionid"})
        assert query in self.answers, f"unexpected query: {query}"
        return self.answers[query]


def user(name, full="", email=None):
    return E(name=name, fullName=full, email=email)


def investigation(id, name, visit, *, title="T", instrument="ID30A", start=None, end=None, release=None,
                  users=(), facility="ESRF"):
    return E(
        id=id, name=name, visitId=visit, title=title, startDate=start, endDate=end, releaseDate=release,
        facility=E(name=facility),
        investigationInstruments=[E(instrument=E(name=instrument))],
        investigationUsers=[E(role=role, user=E(name=n)) for n, role in users],
    )


@pytest.fixture
def make_source(tmp_path):
    secret = tmp_path / "icat-pw"
    secret.write_text("s3cret\n")

    def make(**kwargs):
        settings = dict(url="https://icat.example.org", auth="ldap", reader_username="reader",
                        password_file=str(secret), client_class=StandInClient, user_name_template="ldap/{username}",
                        facility="ESRF", raw_template="/data/visitor/{name}/{instrument}", timeout=5)
        settings.update(kwargs)
        source = IcatProposalSource(**settings)
        source.check()
        return source
    return make


def client(source) -> StandInClient:
    return source._client


def ident(username=None, provider="facility", subject=None, email=None):
    return Identity(provider=provider, subject=subject or username or "", username=username, email=email)


ALICE_INVESTIGATIONS = (
    "SELECT DISTINCT i FROM Investigation i JOIN i.investigationUsers iu JOIN iu.user u JOIN i.facility f "
    f"WHERE u.name = 'ldap/alice' AND f.name = 'ESRF' {INV_INCLUDE}"
)


def test_quoting_doubles_single_quotes():
    assert jpql_string("o'brien") == "'o''brien'"
    assert jpql_string("x' OR '1'='1") == "'x'' OR ''1''=''1'"
    with pytest.raises(ValueError):
        jpql_string("a\x00b")


@pytest.fixture
def answering(monkeypatch):
    """Pre-load the answers every new stand-in client gives."""
    answers: dict[str, list] = {}
    original = StandInClient.__init__

    def init(self, url, **kwargs):
        original(self, url, **kwargs)
        self.answers = answers
    monkeypatch.setattr(StandInClient, "__init__", init)
    return answers


async def test_account_is_found_by_its_icat_user_name(make_source, answering):
    answering["SELECT u FROM User u WHERE u.name = 'ldap/alice'"] = [user("ldap/alice", "Alice A.", "alice@x.org")]
    answering["SELECT u FROM User u WHERE u.name = 'ldap/nobody'"] = []
    source = make_source()
    assert await source.resolve_account(ident("alice")) == Account(
        "alice", roles=frozenset({"user"}), display_name="Alice A.", email="alice@x.org")
    assert await source.resolve_account(ident("nobody")) is None
    assert client(source).kwargs == {"checkCert": True}
    assert client(source).url == "https://icat.example.org"


async def test_a_user_name_with_a_quote_is_quoted_and_then_refused(make_source, answering):
    """The lookup quotes the name; the account is then refused: a quote cannot be in a
    username the hub uses for paths and accounts (daas_hub.model.check_username)."""
    answering["SELECT u FROM User u WHERE u.name = 'ldap/o''brien'"] = [user("ldap/o'brien", "Pat O'Brien")]
    source = make_source()
    with pytest.raises(UnsafeValue, match="username \"o'brien\" is not allowed"):
        await source.resolve_account(ident("o'brien"))
    assert client(source).queries == list(answering)  # no investigation was asked for
    assert "u.name = 'ldap/o''brien'" in investigations_query("ldap/o'brien")


async def test_injection_attempts_stay_inside_the_string_literal(make_source, answering):
    name = "x' OR u.name LIKE '%"
    answering["SELECT u FROM User u WHERE u.name = 'ldap/x'' OR u.name LIKE ''%'"] = []
    source = make_source()
    assert await source.resolve_account(ident(name)) is None
    assert await source.resolve_account(ident("nul\x00byte")) is None  # never sent
    assert client(source).queries == ["SELECT u FROM User u WHERE u.name = 'ldap/x'' OR u.name LIKE ''%'"]


async def test_investigations_become_proposals_with_visits_members_and_data(make_source, answering):
    future = datetime(2099, 1, 1, tzinfo=UTC)
    answering[ALICE_INVESTIGATIONS] = [
        investigation(1, "MX-1", "ID30A-1", title="Lysozyme", start=datetime(2026, 11, 2, 8),
                      end=datetime(2026, 11, 4, 8), users=[("ldap/alice", "principal_experimenter"),
                                                          ("ldap/bob", "local_contact")]),
        investigation(2, "MX-1", "ID30A-2", title="Lysozyme", start=datetime(2026, 12, 1, 8),
                      end=datetime(2026, 12, 2, 8), users=[("ldap/alice", "principal_experimenter"),
                                                          ("ldap/carol", "experimenter")]),
        investigation(3, "HC-2", "ID31-1", title="Operando", instrument="ID31", release=future,
                      start=datetime(2026, 10, 1), end=datetime(2026, 10, 3), users=[("ldap/alice", "experimenter")]),
    ]
    source = make_source(processed_template="/data/processed/{name}")
    proposals = {p.id: p for p in await source.proposals_for(Account("alice"))}
    assert sorted(proposals) == ["HC-2", "MX-1"]
    mx = proposals["MX-1"]
    assert (mx.title, mx.instrument, mx.facility, mx.state) == ("Lysozyme", "ID30A", "ESRF", ProposalState.ACTIVE)
    assert [b.start for b in mx.beamtimes] == [datetime(2026, 11, 2, 8, tzinfo=UTC), datetime(2026, 12, 1, 8, tzinfo=UTC)]
    assert {m.username: m.role for m in mx.members} == {
        "alice": MemberRole.PI, "bob": MemberRole.LOCAL_CONTACT, "carol": MemberRole.MEMBER}
    assert mx.data.raw == "/data/visitor/MX-1/ID30A" and mx.data.processed == "/data/processed/MX-1"
    assert proposals["HC-2"].state is ProposalState.EMBARGOED


async def test_one_proposal_per_visit_when_configured(make_source, answering):
    answering[ALICE_INVESTIGATIONS] = [investigation(1, "MX-1", "a", users=[("ldap/alice", "x")]),
                                       investigation(2, "MX-1", "b", users=[("ldap/alice", "x")])]
    source = make_source(proposal_id_template="{name}-{visit_id}")
    assert [p.id for p in await source.proposals_for(Account("alice"))] == ["MX-1-a", "MX-1-b"]


async def test_facility_instrument_and_role_filters_are_in_the_query(make_source, answering):
    query = (
        "SELECT DISTINCT i FROM Investigation i JOIN i.investigationUsers iu JOIN iu.user u JOIN i.facility f "
        "JOIN i.investigationInstruments ii JOIN ii.instrument ins "
        "WHERE u.name = 'ldap/alice' AND f.name = 'ESRF' AND ins.name IN ('ID01', 'ID''11') "
        f"AND iu.role IN ('principal_experimenter', 'experimenter') {INV_INCLUDE}"
    )
    answering[query] = []
    source = make_source(instruments=["ID01", "ID'11"], roles=["principal_experimenter", "experimenter"])
    assert await source.proposals_for(Account("alice")) == []
    assert investigations_query("u") == (
        "SELECT DISTINCT i FROM Investigation i JOIN i.investigationUsers iu JOIN iu.user u "
        f"WHERE u.name = 'u' {INV_INCLUDE}")


async def test_data_location_from_dataset_locations(make_source, answering):
    answering[ALICE_INVESTIGATIONS] = [investigation(11, "MX-1", "a", users=[("ldap/alice", "x")]),
                                       investigation(12, "MX-1", "b", users=[("ldap/alice", "x")])]
    answering["SELECT ds FROM Dataset ds JOIN ds.investigation i WHERE i.id IN (11, 12) "
              "AND ds.location IS NOT NULL INCLUDE ds.investigation"] = [
        E(location="/data/visitor/mx1/id30a/20261102/sample1", investigation=E(id=11)),
        E(location="/data/visitor/mx1/id30a/20261201/sample2", investigation=E(id=12)),
    ]
    source = make_source(data_location="datasets")
    [proposal] = await source.proposals_for(Account("alice"))
    assert proposal.data.raw == "/data/visitor/mx1/id30a"


async def test_umbrella_identity_is_linked_through_an_icat_user_attribute(make_source, answering):
    answering["SELECT u FROM User u WHERE u.email = 'alice@example.org'"] = [user("ldap/alice", "Alice")]
    source = make_source(user_match="email", identity_templates={"umbrella": "{email}"})
    account = await source.resolve_account(ident(provider="umbrella", subject="f00-umbrella", email="alice@example.org"))
    assert account.username == "alice"
    # an umbrella identity without the attribute is not guessed from other claims
    assert await source.resolve_account(ident(provider="umbrella", subject="f00", username="alice")) is None


async def test_two_users_with_the_same_attribute_are_not_guessed(make_source, answering, caplog):
    answering["SELECT u FROM User u WHERE u.email = 'shared@example.org'"] = [user("ldap/a"), user("ldap/b")]
    source = make_source(user_match="email", identity_templates={"umbrella": "{email}"})
    assert await source.resolve_account(ident(provider="umbrella", subject="s", email="shared@example.org")) is None
    assert "refusing to guess" in caplog.text


async def test_one_login_then_refresh_before_expiry(make_source, answering, monkeypatch):
    from daas_hub.sources import icat_source

    now = [1000.0]
    monkeypatch.setattr(icat_source, "_now", lambda: now[0])
    answering["SELECT u FROM User u WHERE u.name = 'ldap/alice'"] = [user("ldap/alice")]
    source = make_source(refresh_interval=300)
    for _ in range(3):
        await source.resolve_account(ident("alice"))
        now[0] += 99
    now[0] += 4  # 301 s after the login
    await source.resolve_account(ident("alice"))
    assert client(source).calls == ["login ldap reader", "search", "search", "search", "refresh", "search"]
    assert client(source).threads == {"daas-icat_0"}  # blocking calls stay off the event loop
    await source.close()
    assert client(source).calls[-1] == "logout"


async def test_an_expired_session_logs_in_again_once(make_source, answering):
    answering["SELECT u FROM User u WHERE u.name = 'ldap/alice'"] = [user("ldap/alice")]
    source = make_source()
    await source.resolve_account(ident("alice"))
    client(source).expire_next = 1
    assert (await source.resolve_account(ident("alice"))).username == "alice"
    assert client(source).calls == ["login ldap reader", "search", "search", "login ldap reader", "search"]
    client(source).expire_next = 2  # the fresh session fails too: no loop, an outage
    with pytest.raises(SourceUnavailable, match="ICAT: Unable to find user by sessionid"):
        await source.resolve_account(ident("alice"))
    assert client(source).calls.count("login ldap reader") == 3


async def test_a_slow_icat_times_out(make_source, answering):
    answering["SELECT u FROM User u WHERE u.name = 'ldap/alice'"] = [user("ldap/alice")]
    source = make_source(timeout=0.3)
    await source.resolve_account(ident("alice"))
    gate = client(source).gate = threading.Event()
    try:
        # the answer is held back until the test releases it: the error can only come from the timeout
        with pytest.raises(SourceUnavailable, match=r"ICAT \(user\) did not answer within 0.3 s"):
            await asyncio.wait_for(source.resolve_account(ident("alice")), 20)
        assert not gate.is_set()
    finally:
        gate.set()


async def test_missing_reader_rights_say_what_to_fix(make_source, answering):
    source = make_source()
    answering["SELECT u FROM User u WHERE u.name = 'ldap/alice'"] = []
    await source.resolve_account(ident("alice"))
    client(source).privileges = True
    with pytest.raises(SourceUnavailable, match="ICAT refused the reader account .*docs/sources/icat.md"):
        await source.resolve_account(ident("alice"))


@pytest.mark.parametrize("change, entry, problem", [
    ({"url": ""}, "proposal_source > url", "is not set"),
    ({"reader_username": ""}, "proposal_source > reader_username", "is not set"),
    ({"password_file": ""}, "proposal_source > password_file", "no reader password is set"),
    ({"password_file": "/nonexistent"}, "proposal_source > password_file", "cannot read the password file"),
    ({"account_pattern": "^(.+)$"}, "proposal_source > account_pattern", "not a usable regular expression"),
])
def test_check_names_the_setting_to_fix(make_source, change, entry, problem):
    with pytest.raises(SettingsError) as e:
        make_source(**change)
    assert e.value.entry == entry and problem in e.value.problem
