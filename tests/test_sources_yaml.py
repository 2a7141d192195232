"""The YAML proposal source: parsing, identity resolution, errors admins read, reload."""

from __future__ import annotations

import copy
import logging
import os
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from daas_hub.errors import SettingsError, SourceUnavailable
from daas_hub.model import (
    Account,
    Beamtime,
    DataLocations,
    Identity,
    Member,
    MemberRole,
    Proposal,
    ProposalState,
)
from daas_hub.sources import YamlProposalSource
from daas_hub.sources.yaml_source import parse_proposals_file

DOC = {
    "facility": "DEMO Light Source",
    "accounts": [
        {"username": "alice", "uid": 21001, "gid": 21001, "display_name": "Alice Ayrton",
         "email": "Alice@Demo.invalid", "umbrella_id": "umbrella-alice"},
        {"username": "bob", "roles": ["staff", "admin"]},
    ],
    "proposals": [
        {"id": "MX-1", "title": "Cathodes", "instrument": "ID11", "state": "embargoed",
         "members": [{"username": "alice", "role": "pi"}, {"username": "bob"}],
         "sessions": [{"start": "2026-11-02T08:00:00", "end": "2026-11-05"}],
         "data": {"raw": "data/MX-1/raw", "processed": "/abs/MX-1/processed"}},
        {"id": "EC-2", "title": "Bronze", "instrument": "ID21", "members": [{"username": "bob", "role": "pi"}]},
    ],
}


def doc():
    return copy.deepcopy(DOC)


def write(path: Path, document, *, bump: float = 0) -> Path:
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    if bump:
        st = os.stat(path)
        os.utime(path, (st.st_atime, st.st_mtime + bump))
    return path


ALICE = Account("alice", uid=21001, gid=21001, roles=frozenset({"user"}), display_name="Alice Ayrton",
                email="Alice@Demo.invalid")
BOB = Account("bob", roles=frozenset({"staff", "admin"}))


def test_parse_catalogue_valid(tmp_path):
    file = tmp_path / "proposals.yaml"
    cat = parse_proposals_file(doc(), file)
    assert cat.facility == "DEMO Light Source"
    assert cat.accounts == {"alice": ALICE, "bob": BOB}
    assert cat.umbrella == {"umbrella-alice": "alice"}
    assert cat.emails == {"alice@demo.invalid": "alice"}
    assert cat.proposals == (
        Proposal(
            id="MX-1", title="Cathodes", instrument="ID11", facility="DEMO Light Source",
            state=ProposalState.EMBARGOED,
            members=(Member("alice", MemberRole.PI), Member("bob", MemberRole.MEMBER)),
            beamtimes=(Beamtime(datetime(2026, 11, 2, 8), datetime(2026, 11, 5)),),
            data=DataLocations(raw=str(tmp_path.resolve() / "data/MX-1/raw"), processed="/abs/MX-1/processed"),
        ),
        Proposal(id="EC-2", title="Bronze", instrument="ID21", facility="DEMO Light Source",
                 members=(Member("bob", MemberRole.PI),)),
    )
    assert [p.id for p in cat.proposals_of("bob")] == ["MX-1", "EC-2"]
    assert cat.proposals_of("carol") == []


def test_yaml_dates_stay_strings_until_the_model_parses_them(tmp_path):
    """Unquoted YAML dates are not turned into date objects (the schema checks strings)."""
    text = yaml.safe_dump(doc(), sort_keys=False).replace("'2026-11-05'", "2026-11-05")
    assert "end: 2026-11-05\n" in text
    source = YamlProposalSource(path=str(write(tmp_path / "p.yaml", text)))
    source.check()
    [mx] = [p for p in source._load().proposals if p.id == "MX-1"]
    assert mx.beamtimes == (Beamtime(datetime(2026, 11, 2, 8), datetime(2026, 11, 5)),)


@pytest.fixture
def source(tmp_path):
    return YamlProposalSource(path=str(write(tmp_path / "proposals.yaml", doc())))


@pytest.mark.parametrize("identity, match_email, expected", [
    pytest.param(Identity("facility", "s1", username="alice"), False, ALICE, id="username"),
    pytest.param(Identity("demo", "bob", username="bob"), False, BOB, id="username-demo"),
    pytest.param(Identity("facility", "s1", username="carol"), False, None, id="unknown-username"),
    pytest.param(Identity("umbrella", "umbrella-alice"), False, ALICE, id="umbrella-subject"),
    # an UmbrellaID username is chosen by its owner: only the subject links an account
    pytest.param(Identity("umbrella", "umbrella-mallory", username="alice"), False, None,
                 id="umbrella-username-ignored"),
    pytest.param(Identity("facility", "s1", username="a.ayrton", email="alice@demo.INVALID"), False, None,
                 id="email-off"),
    pytest.param(Identity("facility", "s1", username="a.ayrton", email="alice@demo.INVALID"), True, ALICE,
                 id="email-on-casefolded"),
    pytest.param(Identity("umbrella", "umbrella-new", email="alice@demo.invalid"), True, ALICE,
                 id="email-on-umbrella"),
    pytest.param(Identity("facility", "s1", username="a.ayrton", email="nobody@demo.invalid"), True, None,
                 id="email-on-unknown"),
])
async def test_resolve_account(source, identity, match_email, expected):
    source.match_email = match_email
    assert await source.resolve_account(identity) == expected


async def test_proposals_for(source):
    assert [p.id for p in await source.proposals_for(ALICE)] == ["MX-1"]
    assert [p.id for p in await source.proposals_for(BOB)] == ["MX-1", "EC-2"]
    assert await source.proposals_for(Account("carol")) == []
    assert [a.username for a in source.accounts()] == ["alice", "bob"]


def _set(path, value):
    """A mutator that sets ``doc[path...] = value``."""
    def mutate(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _del(*path):
    def mutate(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def _append(key, item):
    return lambda d: d[key].append(item)


MX = 'proposals[0] "MX-1"'

MALFORMED = [
    pytest.param(_del("facility"), "(top level)", "'facility' is a required property", id="missing-facility"),
    pytest.param(_set(("proposals", 0, "titel"), "x"), MX, "('titel' was unexpected)", id="unknown-key"),
    pytest.param(_set(("proposals", 0, "members", 1, "username"), "carol"), f"{MX} > members[1]",
                 '"carol" is not one of the accounts in this file', id="member-not-an-account"),
    pytest.param(_append("proposals", {"id": "MX-1", "title": "again", "instrument": "ID11",
                                       "members": [{"username": "bob"}]}),
                 'proposals[2] "MX-1"', "this proposal id is listed twice", id="duplicate-proposal"),
    pytest.param(_append("accounts", {"username": "alice"}), 'accounts[2] "alice"',
                 "this username is listed twice", id="duplicate-username"),
    pytest.param(_set(("proposals", 0, "id"), "a b"), 'proposals[0] "a b" > id', "does not match",
                 id="bad-proposal-id"),
    pytest.param(_set(("proposals", 0, "id"), 1001), 'proposals[0] "1001" > id', "is not of type 'string'",
                 id="numeric-proposal-id"),
    pytest.param(_set(("proposals", 0, "sessions", 0, "start"), "next tuesday"),
                 f"{MX} > sessions[0] > start", "does not match", id="bad-date-format"),
    pytest.param(_set(("proposals", 0, "sessions", 0, "start"), "2026-13-45"), f"{MX} > sessions[0]",
                 "not a valid date", id="impossible-date"),
    pytest.param(_set(("proposals", 0, "sessions", 0, "end"), "2026-11-01"), f"{MX} > sessions[0]",
                 "the beamtime ends before it starts", id="end-before-start"),
    pytest.param(_set(("proposals", 0, "sessions", 0, "end"), "2026-11-05T08:00:00+01:00"),
                 f"{MX} > sessions[0]", "time zone", id="time-zone-on-one-end-only"),
    pytest.param(_set(("accounts", 0, "uid"), 0), 'accounts[0] "alice" > uid', "0 is less than the minimum of 1",
                 id="uid-0"),
    pytest.param(_set(("proposals", 0, "members", 0, "role"), "boss"),
                 f'{MX} > members[0] "alice" > role', "'boss' is not one of", id="role-not-in-enum"),
    pytest.param(_set(("accounts", 1, "umbrella_id"), "umbrella-alice"), 'accounts[1] "bob"',
                 'UmbrellaID "umbrella-alice" is already linked to "alice"', id="umbrella-linked-twice"),
    pytest.param(_set(("proposals", 1, "members"), []), 'proposals[1] "EC-2" > members', "should be non-empty",
                 id="no-members"),
    pytest.param(lambda d: d.clear(), "(top level)", "is a required property", id="empty-mapping"),
]


@pytest.mark.parametrize("mutate, entry, problem", MALFORMED)
def test_malformed_documents_name_file_entry_and_fix(tmp_path, mutate, entry, problem):
    d = doc()
    mutate(d)
    file = write(tmp_path / "proposals.yaml", d)
    source = YamlProposalSource(path=str(file))
    with pytest.raises(SettingsError) as e:
        source.check()
    message = str(e.value)
    assert message.startswith(f"{file}: {entry}: "), message
    assert problem in message
    assert "\n  Fix: " in message
    assert e.value.entry == entry


def test_fix_comes_from_the_schema(tmp_path):
    d = doc()
    d["accounts"][0]["uid"] = 0
    with pytest.raises(SettingsError) as e:
        parse_proposals_file(d, "p.yaml")
    assert "sessions never run as root" in e.value.fix


@pytest.mark.parametrize("text, where", [
    ("facility: DEMO\naccounts: [\n  - x\n", "line 3"),
    ("facility: DEMO\n  accounts: []\n", "line 2"),
])
def test_yaml_syntax_error_names_the_line(tmp_path, text, where):
    file = write(tmp_path / "proposals.yaml", text)
    with pytest.raises(SettingsError) as e:
        YamlProposalSource(path=str(file)).check()
    message = str(e.value)
    assert message.startswith(f"{file}: {where}, column ")
    assert "this is not valid YAML" in message
    assert "Fix: correct the YAML syntax" in message


def test_empty_file_is_refused(tmp_path):
    file = write(tmp_path / "proposals.yaml", "# nothing yet\n")
    with pytest.raises(SettingsError) as e:
        YamlProposalSource(path=str(file)).check()
    assert str(e.value).startswith(f"{file}: (top level): ")
    assert "Fix:" in str(e.value)


def test_missing_file(tmp_path):
    file = tmp_path / "nope.yaml"
    with pytest.raises(SettingsError) as e:
        YamlProposalSource(path=str(file)).check()
    assert str(e.value) == (
        f"{file}: the proposals file does not exist\n"
        "  Fix: create it (docs/proposals.md) or correct proposal_source.path"
    )


def test_no_path():
    with pytest.raises(SettingsError) as e:
        YamlProposalSource().check()
    assert e.value.entry == "proposal_source > path"
    assert "Fix: set proposal_source.path" in str(e.value)


# -- reload


async def test_an_edit_is_seen_on_the_next_call(source):
    path = Path(source.path)
    assert await source.resolve_account(Identity("demo", "carol", username="carol")) is None
    d = doc()
    d["accounts"].append({"username": "carol"})
    d["proposals"][1]["members"].append({"username": "carol"})
    write(path, d, bump=2)
    carol = await source.resolve_account(Identity("demo", "carol", username="carol"))
    assert carol == Account("carol", roles=frozenset({"user"}))
    assert [p.id for p in await source.proposals_for(carol)] == ["EC-2"]


async def test_a_broken_edit_keeps_the_last_good_file(source, caplog):
    path = Path(source.path)
    assert await source.resolve_account(Identity("demo", "alice", username="alice")) == ALICE
    d = doc()
    d["proposals"][0]["members"].append({"username": "mallory"})
    write(path, d, bump=2)
    with caplog.at_level(logging.ERROR):
        assert await source.resolve_account(Identity("demo", "alice", username="alice")) == ALICE
        assert [p.id for p in await source.proposals_for(ALICE)] == ["MX-1"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, "the broken file is logged"
    assert "Keeping the last good proposals file" in errors[0]
    assert f'{path}: {MX} > members[2]: "mallory" is not one of the accounts' in errors[0]

    write(path, doc(), bump=4)  # fixed again: used again, no more errors
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert await source.resolve_account(Identity("demo", "bob", username="bob")) == BOB
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_deleted_file_keeps_the_last_good_catalogue(source, caplog):
    await source.resolve_account(Identity("demo", "alice", username="alice"))
    os.unlink(source.path)
    with caplog.at_level(logging.ERROR):
        assert await source.resolve_account(Identity("demo", "alice", username="alice")) == ALICE
    assert any("does not exist" in r.getMessage() for r in caplog.records)


async def test_a_first_load_failure_is_source_unavailable(tmp_path):
    d = doc()
    del d["facility"]
    source = YamlProposalSource(path=str(write(tmp_path / "proposals.yaml", d)))
    with pytest.raises(SourceUnavailable) as e:
        await source.resolve_account(Identity("demo", "alice", username="alice"))
    assert "'facility' is a required property" in str(e.value)
    with pytest.raises(SourceUnavailable):
        await source.proposals_for(ALICE)
