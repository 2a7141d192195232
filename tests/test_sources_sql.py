"""The SQL proposal source against a real PostgreSQL server (Debian's postgresql,
a throwaway cluster on a free loopback port, see tests/postgres_server.py), with
a small user office schema, a read-only account, and injection attempts through
the user name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from postgres_server import PostgresServer, pg_bindir

from daas_hub.errors import SettingsError, SourceUnavailable
from daas_hub.model import Account, Identity, MemberRole, ProposalState, UnsafeValue
from daas_hub.sources import SqlProposalSource

BIN = Path(sys.executable).parent

SCHEMA = """
CREATE DATABASE useroffice;
"""
TABLES = """
CREATE TABLE users (login text PRIMARY KEY, uid int, gid int, umbrella_id text UNIQUE,
                    email text, full_name text, roles text[] NOT NULL DEFAULT '{user}');
CREATE TABLE proposals (id serial PRIMARY KEY, code text UNIQUE NOT NULL, title text NOT NULL,
                        beamline text NOT NULL, status text NOT NULL DEFAULT 'active');
CREATE TABLE members (proposal_id int REFERENCES proposals, login text REFERENCES users, role text NOT NULL);
CREATE TABLE beamtimes (proposal_id int REFERENCES proposals, starts timestamptz, ends timestamptz);
INSERT INTO users VALUES
  ('alice', 20001, 20001, 'umb-alice-1', 'alice@example.org', 'Alice A.', '{user}'),
  ('bob', 20002, 20002, NULL, 'bob@example.org', 'Bob B.', '{user,staff}'),
  ('o''brien', 20003, 20003, 'umb-obrien', NULL, 'Pat O''Brien', '{user}');
INSERT INTO proposals (code, title, beamline, status) VALUES
  ('MX-1', 'Lysozyme at 100 K', 'ID30A', 'active'),
  ('HC-2', 'Battery operando', 'ID31', 'embargoed'),
  ('OLD-3', 'Old archive', 'BM01', 'archived');
INSERT INTO members VALUES (1, 'alice', 'principal_investigator'), (2, 'alice', 'member'),
  (1, 'bob', 'local_contact'), (3, 'o''brien', 'member');
INSERT INTO beamtimes VALUES
  (1, '2026-11-02 08:00+00', '2026-11-04 08:00+00'), (1, '2026-12-01 08:00+00', '2026-12-02 08:00+00'),
  (2, '2026-10-01 08:00+00', '2026-10-03 08:00+00');
CREATE TABLE umbrella_links (subject text PRIMARY KEY, login text NOT NULL REFERENCES users);
INSERT INTO umbrella_links VALUES ('umb-linked-bob', 'bob');
CREATE ROLE daas_reader LOGIN PASSWORD 'reader-secret';
GRANT SELECT ON users, proposals, members, beamtimes, umbrella_links TO daas_reader;
"""

ACCOUNT_QUERY = """
SELECT login AS username, uid, gid, roles, full_name AS display_name, email FROM users
WHERE (:provider = 'umbrella' AND umbrella_id = :subject)
   OR (:provider <> 'umbrella' AND login = :username)
"""
PROPOSALS_QUERY = """
SELECT p.code AS id, p.title, p.beamline AS instrument, p.status AS state, m.role,
       b.starts AS start, b.ends AS "end", '/data/' || p.beamline || '/' || p.code AS raw
FROM proposals p JOIN members m ON m.proposal_id = p.id
LEFT JOIN beamtimes b ON b.proposal_id = p.id
WHERE m.login = :username ORDER BY p.code, b.starts
"""


@pytest.fixture(scope="module")
def postgres():
    bindir = pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed: `make test` installs it (requirements/apt-test.txt)")
    server = PostgresServer(bindir).start()
    try:
        server.psql(SCHEMA)
        server.psql(TABLES, database="useroffice")
        yield server
    finally:
        server.stop()


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "db-password"
    path.write_text("reader-secret\n")
    path.chmod(0o600)
    return path


@pytest.fixture
async def source(postgres, secret_file):
    s = SqlProposalSource(url=postgres.url("daas_reader", "useroffice"), password_file=str(secret_file),
                          account_query=ACCOUNT_QUERY, proposals_query=PROPOSALS_QUERY, facility="ESRF")
    s.check()
    yield s
    await s.close()


def ident(username=None, provider="facility", subject=None, email=None):
    return Identity(provider=provider, subject=subject or username or "", username=username, email=email)


async def test_account_and_proposals_from_the_user_office_database(source):
    alice = await source.resolve_account(ident("alice"))
    assert alice == Account("alice", 20001, 20001, frozenset({"user"}), "Alice A.", "alice@example.org")
    proposals = {p.id: p for p in await source.proposals_for(alice)}
    assert sorted(proposals) == ["HC-2", "MX-1"]
    mx = proposals["MX-1"]
    assert (mx.title, mx.instrument, mx.facility, mx.state) == ("Lysozyme at 100 K", "ID30A", "ESRF",
                                                               ProposalState.ACTIVE)
    assert mx.role_of("alice") is MemberRole.PI
    assert [b.start for b in mx.beamtimes] == [datetime(2026, 11, 2, 8, tzinfo=UTC), datetime(2026, 12, 1, 8, tzinfo=UTC)]
    assert mx.data.raw == "/data/ID30A/MX-1"
    assert proposals["HC-2"].state is ProposalState.EMBARGOED
    assert proposals["HC-2"].role_of("alice") is MemberRole.MEMBER
    bob = await source.resolve_account(ident("bob"))
    assert bob.roles == {"user", "staff"}
    [mx_bob] = await source.proposals_for(bob)
    assert mx_bob.role_of("bob") is MemberRole.LOCAL_CONTACT


async def test_umbrella_id_is_linked_through_the_user_office_column(source):
    account = await source.resolve_account(ident(provider="umbrella", subject="umb-alice-1", email="x@y"))
    assert account.username == "alice"
    assert await source.resolve_account(ident(provider="umbrella", subject="umb-nobody")) is None
    # an UmbrellaID is not a facility username: the facility branch must not match it
    assert await source.resolve_account(ident(provider="umbrella", subject="alice")) is None


async def test_umbrella_id_is_linked_through_a_mapping_table(postgres, secret_file):
    s = SqlProposalSource(
        url=postgres.url("daas_reader", "useroffice"), password_file=str(secret_file),
        account_query="SELECT u.login AS username, u.uid, u.gid FROM users u "
                      "LEFT JOIN umbrella_links l ON l.login = u.login "
                      "WHERE (:provider = 'umbrella' AND l.subject = :subject) "
                      "OR (:provider = 'facility' AND u.login = :username)",
        proposals_query=PROPOSALS_QUERY)
    try:
        s.check()
        assert (await s.resolve_account(ident(provider="umbrella", subject="umb-linked-bob"))).username == "bob"
        assert (await s.resolve_account(ident("bob"))).uid == 20002
        assert await s.resolve_account(ident(provider="umbrella", subject="umb-alice-1")) is None
    finally:
        await s.close()


async def test_a_name_with_a_quote_is_a_value_and_then_refused(source):
    """The query carries the quote as a value; the account it finds is refused: a quote
    cannot be in a username the hub uses for paths and accounts (check_username)."""
    with pytest.raises(UnsafeValue, match="username \"o'brien\" is not allowed"):
        await source.resolve_account(ident("o'brien"))


@pytest.mark.parametrize("name", [
    "alice' OR '1'='1",
    "x' OR 1=1 --",
    "'; DROP TABLE users; --",
    "alice'; UPDATE users SET roles = '{admin}' WHERE login = 'alice'; --",
    "x\\' OR 1=1 --",
])
async def test_injection_through_the_user_name_finds_nobody_and_changes_nothing(source, postgres, name):
    assert await source.resolve_account(ident(name)) is None
    with pytest.raises(UnsafeValue):  # such a name never becomes an account, so never a query
        Account(name)
    assert await source.resolve_account(ident(provider="umbrella", subject=name)) is None
    assert postgres.psql("SELECT count(*) FROM users", database="useroffice").strip() == "3"
    assert postgres.psql("SELECT roles FROM users WHERE login = 'alice'", database="useroffice").strip() == "{user}"


async def test_the_reader_cannot_write_even_if_a_query_tried(postgres, secret_file):
    s = SqlProposalSource(url=postgres.url("daas_reader", "useroffice"), password_file=str(secret_file),
                          account_query="DELETE FROM users WHERE login = :username RETURNING login AS username",
                          proposals_query=PROPOSALS_QUERY)
    try:
        with pytest.raises(SourceUnavailable, match="permission denied for table users"):
            await s.resolve_account(ident("alice"))
    finally:
        await s.close()


async def test_a_slow_query_is_cancelled_at_the_timeout(postgres, secret_file):
    s = SqlProposalSource(url=postgres.url("daas_reader", "useroffice"), password_file=str(secret_file),
                          account_query="SELECT login AS username FROM users, pg_sleep(30) WHERE login = :username",
                          proposals_query=PROPOSALS_QUERY, timeout=1)
    try:
        t0 = time.monotonic()
        with pytest.raises(SourceUnavailable, match="statement timeout|did not answer"):
            await s.resolve_account(ident("alice"))
        assert time.monotonic() - t0 < 10
    finally:
        await s.close()


async def test_database_down_or_wrong_password_is_unavailable_and_says_why(postgres, tmp_path):
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password")
    s = SqlProposalSource(url=postgres.url("daas_reader", "useroffice"), password_file=str(wrong),
                          account_query=ACCOUNT_QUERY, proposals_query=PROPOSALS_QUERY, timeout=5)
    with pytest.raises(SourceUnavailable, match="password authentication failed") as e:
        await s.resolve_account(ident("alice"))
    assert "not-the-password" not in str(e.value)
    # the admin corrects the password file: the running source picks it up, no restart
    wrong.write_text("reader-secret\n")
    assert (await s.resolve_account(ident("alice"))).username == "alice"
    await s.close()
    from postgres_server import _free_port

    down = SqlProposalSource(url=f"postgresql+psycopg://daas_reader@127.0.0.1:{_free_port()}/useroffice",
                             account_query=ACCOUNT_QUERY, proposals_query=PROPOSALS_QUERY, timeout=5)
    with pytest.raises(SourceUnavailable, match="user office database"):
        await down.resolve_account(ident("alice"))
    await down.close()


@pytest.mark.parametrize("change, entry, problem", [
    ({"url": ""}, "proposal_source > url", "no database URL is set"),
    ({"url": "not a url"}, "proposal_source > url", "not a database URL"),
    ({"account_query": ""}, "proposal_source > account_query", "the query is missing"),
    ({"account_query": "SELECT 1 WHERE :login = 1"}, "proposal_source > account_query",
     "unknown bind parameter(s) :login"),
    ({"proposals_query": "SELECT 1 AS id, 'x' AS title"}, "proposal_source > proposals_query",
     "does not use the account"),
    ({"password_file": "/nonexistent/pw"}, "proposal_source > password_file", "cannot read the password file"),
])
def test_check_names_the_setting_to_fix(change, entry, problem):
    settings = {"url": "postgresql+psycopg://r@127.0.0.1/uo", "account_query": ACCOUNT_QUERY,
                "proposals_query": PROPOSALS_QUERY, **change}
    with pytest.raises(SettingsError) as e:
        SqlProposalSource(**settings).check()
    assert e.value.entry == entry
    assert problem in e.value.problem


def test_daas_hub_proposals_shows_what_the_database_answers(postgres, secret_file, tmp_path):
    """`daas-hub proposals USER` with a site settings file using the sql kind."""
    settings = tmp_path / "site.yaml"
    settings.write_text(yaml.safe_dump({
        "facility": {"name": "ESRF", "contact": "the User Office"},
        "demo": True,
        "login": {"kind": "demo"},
        "proposal_source": {
            "kind": "sql", "url": postgres.url("daas_reader", "useroffice"), "password_file": str(secret_file),
            "facility": "ESRF", "account_query": ACCOUNT_QUERY, "proposals_query": PROPOSALS_QUERY,
            "cache": {"ttl": 60},
        },
    }))
    out = subprocess.run([str(BIN / "daas-hub"), "proposals", "alice", "--settings", str(settings)],
                         capture_output=True, text=True, timeout=120, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert "username=alice uid=20001 gid=20001" in out.stdout
    assert "proposals: 2 in" in out.stdout and " ms" in out.stdout
    assert "MX-1  [active] ID30A  role=pi  Lysozyme at 100 K" in out.stdout
    assert "2026-11-02..2026-11-04, 2026-12-01..2026-12-02" in out.stdout
    umbrella = subprocess.run([str(BIN / "daas-hub"), "proposals", "anyone", "--subject", "umb-obrien",
                               "--settings", str(settings), "--no-cache"],
                              capture_output=True, text=True, timeout=120)
    assert umbrella.returncode == 1, umbrella.stderr
    assert "provider=umbrella subject=umb-obrien" in umbrella.stdout
    assert "username \"o'brien\" is not allowed" in umbrella.stdout and "the login would be refused" in umbrella.stdout
    nobody = subprocess.run([str(BIN / "daas-hub"), "proposals", "nobody", "--settings", str(settings)],
                            capture_output=True, text=True, timeout=120)
    assert nobody.returncode == 1
    assert "no account is linked to this identity" in nobody.stdout


def test_daas_hub_proposals_says_when_the_catalogue_does_not_answer(tmp_path):
    from postgres_server import _free_port

    settings = tmp_path / "site.yaml"
    settings.write_text(yaml.safe_dump({
        "facility": {"name": "ESRF", "contact": "the User Office"}, "demo": True, "login": {"kind": "demo"},
        "proposal_source": {"kind": "sql", "url": f"postgresql+psycopg://r@127.0.0.1:{_free_port()}/uo",
                            "account_query": ACCOUNT_QUERY, "proposals_query": PROPOSALS_QUERY, "timeout": 5},
    }))
    out = subprocess.run([str(BIN / "daas-hub"), "proposals", "alice", "--settings", str(settings)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    assert "the catalogue did not answer: account lookup: user office database:" in out.stderr
    assert "Traceback" not in out.stderr
