"""Pure units: the model, the access rule, auth_state, the mount plan, and the
session start-up that lays the plan out in a home folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daas_hub import session
from daas_hub.access import (
    STATE_KEY,
    LoginPolicy,
    decide_access,
    make_auth_state,
    proposal_groups,
    read_auth_state,
)
from daas_hub.model import (
    Account,
    Beamtime,
    DataLocations,
    Member,
    MemberRole,
    Proposal,
    ProposalState,
)
from daas_hub.mounts import (
    MountEntry,
    MountPlan,
    Notice,
    describe_missing,
    missing_sources,
    missing_text,
    plan_mounts,
)

BIN = Path(sys.executable).parent
FACILITY = "DEMO Light Source"
CONTACT = "the DEMO User Office (uo@demo.invalid)"


def proposal(pid="MX-1", *, members=(("alice", "pi"),), state="active",
             raw="/data/MX-1/raw", processed="/data/MX-1/processed"):
    return Proposal(
        id=pid, title=f"Title of {pid}", instrument="ID11", facility=FACILITY,
        state=ProposalState(state),
        members=tuple(Member(u, MemberRole(r)) for u, r in members),
        data=DataLocations(raw=raw, processed=processed),
    )


# -- model


def test_proposal_round_trip():
    p = Proposal(
        id="MX-1001", title="Cathodes", instrument="ID11", facility=FACILITY,
        state=ProposalState.EMBARGOED,
        members=(Member("alice", MemberRole.PI), Member("dave", MemberRole.LOCAL_CONTACT)),
        beamtimes=(Beamtime(datetime(2026, 11, 2, 8), datetime(2026, 11, 5, 8)),),
        data=DataLocations(raw="/data/raw", processed="/data/processed"),
    )
    d = p.to_dict()
    assert d == {
        "id": "MX-1001", "title": "Cathodes", "instrument": "ID11", "facility": FACILITY,
        "state": "embargoed",
        "members": [{"username": "alice", "role": "pi"}, {"username": "dave", "role": "local-contact"}],
        "beamtimes": [{"start": "2026-11-02T08:00:00", "end": "2026-11-05T08:00:00"}],
        "data": {"raw": "/data/raw", "processed": "/data/processed"},
    }
    assert json.loads(json.dumps(d)) == d  # JSON-ready, for auth_state
    assert Proposal.from_dict(d) == p
    # auth_state written by 0.1 called beamtimes "sessions"
    old = {**{k: v for k, v in d.items() if k != "beamtimes"}, "sessions": d["beamtimes"]}
    assert Proposal.from_dict(old) == p


def test_proposal_from_minimal_dict_takes_defaults():
    assert Proposal.from_dict({"id": 1001}) == Proposal(id="1001", title="", instrument="", facility="")


@pytest.mark.parametrize("username, role", [
    ("alice", MemberRole.PI),
    ("bob", MemberRole.MEMBER),
    ("dave", MemberRole.LOCAL_CONTACT),
    ("erin", None),
])
def test_role_of(username, role):
    p = proposal(members=(("alice", "pi"), ("bob", "member"), ("dave", "local-contact")))
    assert p.role_of(username) is role


@pytest.mark.parametrize("state, mountable", [("active", True), ("embargoed", True), ("archived", False)])
def test_mountable(state, mountable):
    assert proposal(state=state).mountable is mountable


def test_account_round_trip():
    a = Account("alice", uid=21001, gid=21001, roles=frozenset({"user", "staff"}),
                display_name="Alice Ayrton", email="alice@demo.invalid")
    d = a.to_dict()
    assert d == {"username": "alice", "uid": 21001, "gid": 21001, "roles": ["staff", "user"],
                 "display_name": "Alice Ayrton", "email": "alice@demo.invalid"}
    assert Account.from_dict(d) == a
    assert Account.from_dict({"username": "bob"}) == Account("bob")


# -- access


def account(name, *roles):
    return Account(name, roles=frozenset(roles or {"user"}))


ALICE_ON_MX = [proposal(members=(("alice", "pi"),))]
ONLY_BOB = [proposal(members=(("bob", "pi"),))]
ARCHIVED_ONLY = [proposal(state="archived", members=(("alice", "member"),))]


@pytest.mark.parametrize("acct, proposals, staff_ok, allowed, reason, words", [
    pytest.param(None, [], True, False, "no-account",
                 ["signed in as alice@umbrella", "not linked to an account at DEMO Light Source",
                  CONTACT], id="no-account"),
    pytest.param(account("alice"), ALICE_ON_MX, True, True, "proposal", [], id="member"),
    pytest.param(account("dave", "staff"), [], True, True, "staff", [], id="staff"),
    pytest.param(account("dave", "admin"), [], True, True, "staff", [], id="admin"),
    pytest.param(account("dave", "staff"), [], False, False, "no-proposal",
                 ["not on any proposal at DEMO Light Source", CONTACT], id="staff-not-allowed"),
    pytest.param(account("dave", "staff"), [proposal(members=(("dave", "local-contact"),))], False,
                 True, "proposal", [], id="staff-on-a-proposal-not-allowed-without"),
    pytest.param(account("ivan", "instructor"), [], False, True, "training", [], id="instructor"),
    pytest.param(account("tina", "training"), [], True, True, "training", [], id="training"),
    # the archived proposal is still the user's: the session shows how to restore it
    pytest.param(account("alice"), ARCHIVED_ONLY, True, True, "proposal", [], id="archived-only"),
    pytest.param(account("alice"), [], True, False, "no-proposal",
                 ["signed in as alice@umbrella (account alice)", "not on any proposal at DEMO Light Source",
                  "principal investigator", CONTACT], id="no-proposals"),
    pytest.param(account("alice"), ONLY_BOB, True, False, "no-proposal",
                 ["not on any proposal at DEMO Light Source"], id="listed-proposal-not-a-member"),
])
def test_decide_access(acct, proposals, staff_ok, allowed, reason, words):
    policy = LoginPolicy(facility_name=FACILITY, contact=CONTACT, staff_without_proposal=staff_ok)
    decision = decide_access(acct, proposals, policy=policy, who="alice@umbrella")
    assert policy.decide(acct, proposals, who="alice@umbrella") == decision
    assert (decision.allowed, decision.reason) == (allowed, reason)
    for word in words:
        assert word in decision.message
    if allowed:
        assert decision.message == ""


def test_auth_state_round_trip():
    a = Account("alice", uid=21001, gid=21001, roles=frozenset({"user"}))
    ps = [proposal("MX-1"), proposal("EC-2", state="archived")]
    now = datetime(2026, 11, 2, 8, tzinfo=UTC)
    state = make_auth_state(a, ps, now=now, stale=True)
    assert set(state) == {STATE_KEY}
    assert state[STATE_KEY]["fetched_at"] == "2026-11-02T08:00:00+00:00"
    assert state[STATE_KEY]["stale"] is True
    assert json.loads(json.dumps(state)) == state
    assert read_auth_state(state) == (a, ps)


@pytest.mark.parametrize("auth_state", [None, {}, {"other": 1}, {STATE_KEY: None}])
def test_read_auth_state_without_entry(auth_state):
    assert read_auth_state(auth_state) is None


def test_proposal_groups_only_where_member():
    ps = [proposal("MX-1", members=(("alice", "pi"),)), proposal("EC-2", members=(("bob", "pi"),)),
          proposal("AA-3", members=(("alice", "member"), ("bob", "pi")), state="archived")]
    assert proposal_groups(ps, "alice") == ["proposal-AA-3", "proposal-MX-1"]
    assert proposal_groups(ps, "erin") == []


# -- mount plan


def test_plan_mounts_minimal():
    assert plan_mounts("alice", [proposal()]) == MountPlan(
        root="proposals",
        proposals=("MX-1",),
        mounts=(
            MountEntry("proposals/MX-1/raw", "/data/MX-1/raw", True, "MX-1"),
            MountEntry("proposals/MX-1/processed", "/data/MX-1/processed", False, "MX-1"),
        ),
        notices=(),
    )


def test_plan_mounts_empty():
    assert plan_mounts("alice", []) == MountPlan("proposals", (), (), ())


def test_plan_mounts_only_own_proposals_sorted_once():
    ps = [
        proposal("ZZ-9", members=(("alice", "member"),), raw="/z/raw", processed=None),
        proposal("BB-2", members=(("bob", "pi"),), raw="/b/raw", processed="/b/processed"),
        proposal("AA-1", members=(("alice", "pi"), ("bob", "member")), raw="/a/raw", processed=None),
        proposal("AA-1", members=(("alice", "pi"),), raw="/dup/raw", processed=None),
    ]
    plan = plan_mounts("alice", ps, root="data")
    assert plan == MountPlan(
        root="data",
        proposals=("AA-1", "ZZ-9"),
        mounts=(MountEntry("data/AA-1/raw", "/a/raw", True, "AA-1"),
                MountEntry("data/ZZ-9/raw", "/z/raw", True, "ZZ-9")),
        notices=(),
    )
    assert "BB-2" not in plan.to_json()


@pytest.mark.parametrize("portal, where", [
    ("https://data.demo.invalid", "Restore it through the data portal at https://data.demo.invalid;"),
    (None, "Restore it through the data portal;"),
])
def test_plan_mounts_archived_is_a_notice_only(portal, where):
    plan = plan_mounts("alice", [proposal("HC-3", state="archived")], data_portal_url=portal)
    assert plan.proposals == ("HC-3",)
    assert plan.mounts == ()
    [notice] = plan.notices
    assert (notice.path, notice.proposal) == ("proposals/HC-3/ARCHIVED-README.txt", "HC-3")
    assert notice.text.startswith("Proposal HC-3 (Title of HC-3) is archived")
    assert where in notice.text


def test_plan_mounts_embargoed_is_mounted():
    plan = plan_mounts("alice", [proposal("LS-4", state="embargoed", raw="/l/raw", processed="/l/proc")])
    assert plan.mounts == (MountEntry("proposals/LS-4/raw", "/l/raw", True, "LS-4"),
                           MountEntry("proposals/LS-4/processed", "/l/proc", False, "LS-4"))
    assert plan.notices == ()


def test_plan_mounts_no_data_is_a_notice():
    plan = plan_mounts("alice", [proposal("ND-1", raw=None, processed=None)])
    assert plan == MountPlan("proposals", ("ND-1",), (), (Notice(
        "proposals/ND-1/NO-DATA-README.txt",
        "Proposal ND-1 has no data location in the catalogue yet.\n"
        "Ask your local contact if you expected data here.\n",
        "ND-1",
    ),))


def test_mount_plan_json_round_trip():
    plan = plan_mounts("alice", [proposal("MX-1"), proposal("HC-3", state="archived"),
                                 proposal("ND-1", raw=None, processed=None)],
                       data_portal_url="https://data.demo.invalid")
    assert len(plan.mounts) == 2 and len(plan.notices) == 2
    assert MountPlan.from_json(plan.to_json()) == plan


# -- laying the plan out in a home (daas-hub-session)


@pytest.fixture
def storage(tmp_path):
    """Proposal data folders outside the home, and the home itself."""
    for d in ("MX-1/raw", "MX-1/processed", "MX-1/raw2", "EC-2/raw", "EC-2/processed"):
        (tmp_path / "data" / d).mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    return tmp_path / "data", home


def make_plan(data, *specs, portal="https://data.demo.invalid"):
    """``specs``: (id, state, raw, processed) with raw/processed relative to ``data``."""
    ps = [proposal(pid, state=state, raw=raw and str(data / raw), processed=proc and str(data / proc))
          for pid, state, raw, proc in specs]
    return plan_mounts("alice", ps, data_portal_url=portal)


def tree(root: Path) -> dict:
    """Every entry under ``root``: links as ("link", target), files as ("file", text)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", path.read_text())
    return out


def test_materialize_creates_links_and_notices(storage):
    data, home = storage
    plan = make_plan(data, ("MX-1", "active", "MX-1/raw", "MX-1/processed"),
                     ("HC-3", "archived", "x", "y"))
    session.materialize(plan, home)
    assert tree(home / "proposals") == {
        "HC-3": ("dir",),
        "HC-3/ARCHIVED-README.txt": ("file", plan.notices[0].text),
        "MX-1": ("dir",),
        "MX-1/processed": ("link", str(data / "MX-1/processed")),
        "MX-1/raw": ("link", str(data / "MX-1/raw")),
    }
    session.materialize(plan, home)  # idempotent
    assert set(tree(home / "proposals")) == {"HC-3", "HC-3/ARCHIVED-README.txt", "MX-1",
                                              "MX-1/processed", "MX-1/raw"}


def test_materialize_second_run_follows_the_changed_plan(storage, capfd):
    data, home = storage
    first = make_plan(data, ("MX-1", "active", "MX-1/raw", "MX-1/processed"),
                      ("EC-2", "active", "EC-2/raw", "EC-2/processed"),
                      ("GONE-1", "active", "EC-2/raw", None),
                      ("HC-3", "archived", None, None),
                      ("ND-1", "active", None, None))
    session.materialize(first, home)
    root = home / "proposals"
    (root / "EC-2" / "my-notes.txt").write_text("keep me")
    (root / "EC-2" / "old-README.txt").mkdir()  # a user's folder that only looks like a notice

    second = make_plan(data, ("MX-1", "active", "MX-1/raw2", None),  # raw moved, processed gone
                       ("HC-3", "active", "EC-2/raw", None),  # restored from the archive
                       ("ND-1", "active", "EC-2/processed", None))  # got its data
    session.materialize(second, home)
    assert tree(root) == {
        "EC-2": ("dir",),  # removed from the plan, kept for the user's file
        "EC-2/my-notes.txt": ("file", "keep me"),
        "EC-2/old-README.txt": ("dir",),
        "HC-3": ("dir",),
        "HC-3/raw": ("link", str(data / "EC-2/raw")),
        "MX-1": ("dir",),
        "MX-1/raw": ("link", str(data / "MX-1/raw2")),
        "ND-1": ("dir",),
        "ND-1/raw": ("link", str(data / "EC-2/processed")),
    }  # GONE-1 had only links: its folder is gone
    assert (data / "EC-2/raw").is_dir() and (data / "EC-2/processed").is_dir()  # targets untouched
    err = capfd.readouterr().err
    assert f"kept {root / 'EC-2'}: you are no longer on proposal EC-2" in err


def test_materialize_never_replaces_the_users_own_folder(storage, capfd):
    data, home = storage
    own = home / "proposals" / "MX-1" / "raw"
    own.mkdir(parents=True)
    (own / "mine.txt").write_text("mine")
    session.materialize(make_plan(data, ("MX-1", "active", "MX-1/raw", "MX-1/processed")), home)
    assert not own.is_symlink()
    assert (own / "mine.txt").read_text() == "mine"
    assert (home / "proposals/MX-1/processed").is_symlink()
    assert f"kept {own}: it is your own file or folder" in capfd.readouterr().err


def test_materialize_replaces_a_notice_the_user_turned_into_a_link(storage, tmp_path):
    data, home = storage
    target = tmp_path / "elsewhere.txt"
    target.write_text("not yours to overwrite")
    folder = home / "proposals" / "HC-3"
    folder.mkdir(parents=True)
    (folder / "ARCHIVED-README.txt").symlink_to(target)
    session.materialize(make_plan(data, ("HC-3", "archived", None, None)), home)
    assert target.read_text() == "not yours to overwrite"
    assert not (folder / "ARCHIVED-README.txt").is_symlink()
    assert "is archived" in (folder / "ARCHIVED-README.txt").read_text()


def test_materialize_moves_a_symlinked_root_aside(storage, tmp_path, capfd):
    data, home = storage
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "proposals").symlink_to(elsewhere)
    session.materialize(make_plan(data, ("MX-1", "active", "MX-1/raw", None)), home)
    root = home / "proposals"
    assert root.is_dir() and not root.is_symlink()
    assert (root / "MX-1/raw").is_symlink()
    aside = home / "proposals.moved-by-daas-hub"
    assert aside.is_symlink() and os.readlink(aside) == str(elsewhere)
    assert list(elsewhere.iterdir()) == []  # nothing was written through the link
    assert "was not a folder; moved it to" in capfd.readouterr().err


def test_materialize_moves_a_file_root_aside(storage):
    data, home = storage
    (home / "proposals").write_text("a file")
    session.materialize(make_plan(data, ("MX-1", "active", "MX-1/raw", None)), home)
    assert (home / "proposals.moved-by-daas-hub").read_text() == "a file"
    assert (home / "proposals/MX-1/raw").is_symlink()


def test_session_main_lays_out_then_execs(storage, monkeypatch):
    data, home = storage
    plan = make_plan(data, ("MX-1", "active", "MX-1/raw", None))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(session.PLAN_ENV, plan.to_json())
    calls, masks = [], []
    monkeypatch.setattr(session.os, "execvp", lambda prog, argv: calls.append((prog, argv)))
    # main sets the session's umask: recorded here, never applied to the test run itself (a
    # leaked 0007 made later tests' folders unreadable to the session accounts)
    monkeypatch.setattr(session.os, "umask", lambda mask: masks.append(mask) or 0o022)
    session.main(["--", "jupyterhub-singleuser", "--debug"])
    assert calls == [("jupyterhub-singleuser", ["jupyterhub-singleuser", "--debug"])]
    assert masks == [0o007]
    assert (home / "proposals/MX-1/raw").is_symlink()
    assert session.PLAN_ENV not in os.environ  # the command does not inherit the plan


def test_session_main_without_command(capsys):
    with pytest.raises(SystemExit) as e:
        session.main([])
    assert e.value.code == 2
    assert "usage: daas-hub-session COMMAND" in capsys.readouterr().err


def test_session_with_a_bad_plan_still_starts_the_command(tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           session.PLAN_ENV: "not json"}
    r = subprocess.run([str(BIN / "daas-hub-session"), "/bin/echo", "hi"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"
    assert "daas-hub-session: could not lay out the proposals folder" in r.stderr
    assert "starting without it" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "proposals").exists()


def test_materialize_keeps_the_users_own_readme_files(storage):
    """Only the notices daas-hub writes are managed, not every *-README.txt."""
    data, home = storage
    session.materialize(make_plan(data, ("MX-1", "active", "MX-1/raw", None),
                                  ("EC-2", "active", "EC-2/raw", None)), home)
    mine = [home / "proposals/MX-1/analysis-README.txt", home / "proposals/EC-2/MY-README.txt"]
    for path in mine:
        path.write_text("my notes")
    session.materialize(make_plan(data, ("MX-1", "active", "MX-1/raw", None)), home)
    for path in mine:
        assert path.read_text() == "my notes"


def test_materialize_never_overwrites_what_it_moved_aside_before(storage):
    data, home = storage
    plan = make_plan(data, ("MX-1", "active", "MX-1/raw", None))
    (home / "proposals").write_text("first")
    session.materialize(plan, home)
    shutil.rmtree(home / "proposals")
    (home / "proposals").write_text("second")
    session.materialize(plan, home)
    moved = sorted(p.name for p in home.iterdir() if p.name.startswith("proposals.moved-by-daas-hub"))
    assert [(home / name).read_text() for name in moved] == ["first", "second"]
    assert (home / "proposals/MX-1/raw").is_symlink()


def test_a_missing_data_folder_is_a_notice_not_a_broken_link(storage, capfd):
    """A wrong data path in the catalogue: the session says so where the link would be, and
    the link comes back once the folder exists."""
    data, home = storage
    plan = make_plan(data, ("MX-1", "active", "MX-1/raw", "MX-1/nothing-here"))
    assert [m.source for m in missing_sources(plan)] == [str(data / "MX-1/nothing-here")]
    assert "processed data folder" in describe_missing(missing_sources(plan)[0])
    session.materialize(plan, home)
    notice = "PROCESSED-DATA-MISSING-README.txt"
    assert tree(home / "proposals") == {
        "MX-1": ("dir",),
        "MX-1/raw": ("link", str(data / "MX-1/raw")),
        f"MX-1/{notice}": ("file", missing_text("MX-1", "processed", str(data / "MX-1/nothing-here"))),
    }
    assert "nothing-here is not a folder this session can open" in capfd.readouterr().err
    (data / "MX-1/nothing-here").mkdir()
    session.materialize(plan, home)
    assert tree(home / "proposals") == {
        "MX-1": ("dir",),
        "MX-1/raw": ("link", str(data / "MX-1/raw")),
        "MX-1/processed": ("link", str(data / "MX-1/nothing-here")),
    }


def test_daas_hub_proposals_flags_a_missing_data_folder(tmp_path):
    from daas_hub.cli import _data_path

    assert _data_path(None) == "-"
    assert _data_path(str(tmp_path)) == str(tmp_path)
    assert _data_path(str(tmp_path / "gone")).endswith("(MISSING on this machine: sessions show a notice "
                                                        "instead of the folder)")
