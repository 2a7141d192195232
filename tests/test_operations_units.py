"""Operations, pure parts: lifetimes, the store, usage reports, status, the culler entry, JSON logs.

Time is always injected (epoch seconds passed in); no wall-clock margins.
"""

from __future__ import annotations

import json
import logging

import pytest

from daas_hub.lifetime import Lifetime, Phase, extension_refusal, format_left
from daas_hub.operations import JsonFormatter, Operations, culler_service
from daas_hub.quotas import Quota, Usage
from daas_hub.usage import OperationsStore, format_report, status, usage_report, usage_series
from daas_hub.usage_plot import bar_chart

T0 = 1_800_000_000.0
GIB = 1024**3


@pytest.mark.parametrize(("now", "phase", "left"), [
    (T0, Phase.RUNNING, 3600), (T0 + 2699, Phase.RUNNING, 901), (T0 + 2700, Phase.WARNING, 900),
    (T0 + 3599, Phase.WARNING, 1), (T0 + 3600, Phase.OVER, 0), (T0 + 9999, Phase.OVER, 0),
])
def test_lifetime_phases(now, phase, left):
    life = Lifetime(T0, 1)
    assert life.phase(now, warn_before=900) is phase
    assert life.left(now) == left
    assert life.extended(0.5).deadline == T0 + 5400


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (40, "40 s"), (720, "12 min"), (3 * 3600 + 300, "3 h 05 min")])
def test_format_left(seconds, text):
    assert format_left(seconds) == text


QUOTA = Quota(sessions=2, cpu=16, memory=64 * GIB, gpu=1, hours=8)


@pytest.mark.parametrize(("used_hours", "extra", "refused"), [
    (4, 4, None),
    (4, 4.5, "Not extended: your sessions already hold 4 h of your 8 h quota, so 4 h can be added."),
    (8, 0.25, "Not extended: your sessions already hold 8 h of your 8 h quota, so 0 h can be added."),
    (1, 0, "Choose a positive number of hours to extend by."),
    (1, 6, "One extension adds at most 5 h; ask again later for more."),
])
def test_extension_within_quota(used_hours, extra, refused):
    got = extension_refusal(QUOTA, Usage(sessions=1, hours=used_hours), extra, max_extension=5)
    assert (got if got is None else got.split(" Stop another")[0]) == refused


def _run(store, rid, *, user="alice", proposal="MX-1", cpu=2, gpu=0, start=T0, end=None, seen=None, course=""):
    store.requested(rid, user=user, server="", proposal=proposal, profile="mx", backend="local", course=course,
                    cpu=cpu, memory=4 * GIB, gpu=gpu, hours=4, now=start - 5)
    store.started(rid, start)
    if seen is not None:
        store.seen(rid, seen)
    if end is not None:
        store.ended(rid, end)


def test_usage_report_clips_to_the_period_and_counts_open_sessions_to_their_last_poll(tmp_path):
    store = OperationsStore(tmp_path / "ops.sqlite")
    _run(store, "a", cpu=2, end=T0 + 3600)  # 1 h, 2 CPU
    _run(store, "b", user="bob", cpu=4, gpu=1, start=T0 + 1800, seen=T0 + 5400, course="course-1")  # open, 1 h so far
    _run(store, "c", proposal=None, start=T0 - 7200, end=T0 - 3600)  # before the period
    store.requested("d", user="carol", server="x", proposal="MX-1", profile="mx", backend="slurm", course="",
                    cpu=8, memory=GIB, gpu=0, hours=1, now=T0)
    store.ended("d", T0 + 10, failed=True, detail="timeout")  # never ran: no hours
    records = store.sessions(since=T0, until=T0 + 7200)
    by_proposal = usage_report(records, T0, T0 + 7200, "proposal")
    assert [(r.key, r.sessions, r.session_hours, r.cpu_hours, r.gpu_hours) for r in by_proposal] == [
        ("MX-1", 2, 2.0, 6.0, 1.0)]
    by_user = usage_report(records, T0 + 1800, T0 + 3600, "user")  # half an hour of each
    assert [(r.key, r.session_hours, r.cpu_hours) for r in by_user] == [("alice", 0.5, 1.0), ("bob", 0.5, 2.0)]
    assert [r.key for r in usage_report(records, T0, T0 + 7200, "course")] == ["(none)", "course-1"]
    assert format_report(by_proposal, "proposal", as_csv=True) == (
        "proposal,sessions,session_hours,cpu_hours,gpu_hours\nMX-1,2,2.0000,6.0000,1.0000\n")
    edges, series = usage_series(records, T0, T0 + 7200, buckets=2)
    assert edges == [T0, T0 + 3600] and series == {"MX-1": [2.0 + 2.0, 2.0]}


def test_store_survives_reopening_and_a_second_end_changes_nothing(tmp_path):
    path = tmp_path / "ops.sqlite"
    _run(OperationsStore(path), "a", end=T0 + 60)
    again = OperationsStore(path)
    again.ended("a", T0 + 9999)
    assert again.record("a").ended == T0 + 60 and again.record("a").state == "ended"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {
        "ops.sqlite": "0o600", "ops.sqlite-wal": "0o600", "ops.sqlite-shm": "0o600"}


def test_status_counts_running_and_pending(tmp_path):
    store = OperationsStore(tmp_path / "ops.sqlite")
    _run(store, "a")
    _run(store, "b", user="bob")
    _run(store, "c", end=T0 + 1)
    store.requested("p", user="bob", server="gpu", proposal="MX-1", profile="mx", backend="slurm", course="",
                    cpu=8, memory=GIB, gpu=1, hours=2, now=T0)
    store.pending_detail("p", "Job 12 is PENDING (Resources)")
    st = status(store.sessions(open_only=True))
    assert st.running == {("local", "MX-1", "mx"): 2}
    assert [(r.user, r.detail) for r in st.pending] == [("bob", "Job 12 is PENDING (Resources)")]
    assert st.per_user["bob"] == {"sessions": 2, "cpu": 10, "memory": 5 * GIB, "gpu": 1, "hours": 6}


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"text": " "}, "The announcement is empty"),
    ({"text": "x" * 1001}, "keep it under 1000"),
    ({"text": "x", "level": "panic"}, "Unknown level 'panic'"),
    ({"text": "x", "ends": T0 - 1}, "The end time is in the past"),
])
def test_bad_announcements_are_refused_with_a_sentence(tmp_path, kwargs, problem):
    store = OperationsStore(tmp_path / "ops.sqlite")
    with pytest.raises(ValueError, match=problem):
        store.announce(**{"ends": None, **kwargs}, now=T0)
    assert store.announcements() == []


def test_announcements_end_at_their_end_time(tmp_path):
    store = OperationsStore(tmp_path / "ops.sqlite")
    a = store.announce("Maintenance on Monday", ends=T0 + 60, now=T0)
    store.announce("Beamtime news", level="warning", ends=None, now=T0)
    assert [x.text for x in store.announcements(T0 + 59)] == ["Beamtime news", "Maintenance on Monday"]
    assert [x.text for x in store.announcements(T0 + 60)] == ["Beamtime news"]
    store.withdraw(a)
    assert len(store.announcements()) == 1


def test_culler_service_defaults_and_off():
    service, role = culler_service({})
    assert service["command"][1:] == ["-m", "jupyterhub_idle_culler", "--timeout=3600", "--cull-every=300",
                                      "--concurrency=10"]
    assert set(role["scopes"]) == {"list:users", "read:users:activity", "read:servers", "delete:servers"}
    assert culler_service({"max_age": 86400})[0]["command"][-1] == "--max-age=86400"
    assert culler_service({"enabled": False}) is None


def test_operations_settings_are_checked():
    with pytest.raises(Exception, match="Operations.clock = 'no.such.clock' cannot be imported"):
        Operations(clock="no.such.clock")
    with pytest.raises(Exception, match="Operations.lifetime_warning must not be negative"):
        Operations(lifetime_warning=-1)
    assert Operations(clock="time.time").now() > 0


def test_json_log_line_carries_the_spawn_fields():
    record = logging.LogRecord("JupyterHub", logging.INFO, __file__, 1, "daas %s", ("spawn-start",), None)
    record.daas = {"event": "spawn-start", "request_id": "abc", "proposal": "MX-1"}
    line = json.loads(JsonFormatter().format(record))
    assert {k: line[k] for k in ("level", "message", "event", "request_id", "proposal")} == {
        "level": "INFO", "message": "daas spawn-start", "event": "spawn-start", "request_id": "abc",
        "proposal": "MX-1"}


def test_bar_chart_escapes_and_draws_one_bar_per_step():
    svg = bar_chart("<MX-1>", [T0, T0 + 3600, T0 + 7200], [1.0, 0.0, 2.0])
    assert svg.startswith("<svg") and svg.count('class="daas-bar"') == 3 and "&lt;MX-1&gt;" in svg


@pytest.mark.parametrize(("key", "ok"), [
    ("", False), ("ab" * 32, True), ("ab" * 31, False), ("not-a-key", False),
    ("q" * 43, True),  # 32 bytes in url-safe base64
    ("ab" * 32 + ";" + "cd" * 32, True),
])
def test_doctor_crypt_key(monkeypatch, tmp_path, key, ok):
    from daas_hub.doctor import check_crypt_key
    from daas_hub.settings import Settings

    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", key)
    settings = Settings(file="site.yaml", demo=False, facility_name="F", contact="c", data_portal_url=None,
                        source_kind="yaml", source_path=None, profile_catalogue=None, profiles_enabled=None,
                        login_kind="demo", staff_without_proposal=True, backend="local", run_as=None,
                        home_root=None, hub_url="http://127.0.0.1:8000", data_dir=str(tmp_path))
    assert check_crypt_key(settings).ok is ok


def test_notice_script_tag_quotes_the_server_name():
    from daas_hub.lab_notices import script_tag

    assert script_tag("/jh/", "my run&1") == b'<script src="/jh/hub/daas/notices.js?server=my%20run%261" defer></script>'
