"""Provenance records (daas_hub.provenance): the pure builder, the file, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest

from daas_hub import cli
from daas_hub.mounts import MountEntry, MountPlan
from daas_hub.profiles import load_catalogue
from daas_hub.provenance import (
    REQUEST_ENV,
    SOFTWARE_ENV,
    build_record,
    describe,
    package_lock,
    profile_software,
    record_name,
    start_again_url,
    write_record,
    write_session_record,
)

REQUEST = {"proposal": "MX-1001", "profile": "python", "backend": "local", "cpu": 2, "memory": 4.0,
           "gpu": 0, "hours": 4.0}
STARTED = datetime(2026, 3, 1, 9, 30, 5, tzinfo=UTC)


def test_build_record_minimal():
    record = build_record(request=REQUEST, software={"environment": {}}, started=STARTED, user="alice",
                          server="default", version="0.1.0", python="/usr/bin/python3",
                          packages=["numpy==2.0.0", "Jinja2==3.1.4", "numpy==2.0.0"])
    lock = package_lock(["Jinja2==3.1.4", "numpy==2.0.0"])
    assert record == {
        "format": 1, "daas_hub_version": "0.1.0", "user": "alice", "server": "default",
        "started": "2026-03-01T09:30:05Z", "stopped": None,
        "proposal": "MX-1001", "profile": "python", "backend": "local",
        "resources": {"cpu": 2, "memory": 4.0, "gpu": 0, "hours": 4.0},
        "request": REQUEST,
        "software": {"environment": {}},
        "python": "/usr/bin/python3",
        "packages": ["Jinja2==3.1.4", "numpy==2.0.0"],
        "packages_sha256": lock["sha256"],
        "start_again_url": ("/hub/spawn?opt-proposal=MX-1001&opt-profile=python&opt-backend=local&opt-cpu=2"
                            "&opt-memory=4&opt-gpu=0&opt-hours=4"),
    }
    assert record_name(record) == "20260301T093005Z-alice-default.json"


@pytest.mark.parametrize("hub_url, base_url, expected", [
    ("", "/", "/hub/spawn?"),
    ("", "/jh/", "/jh/hub/spawn?"),
    ("https://daas.example/hub/", "/", "https://daas.example/hub/spawn?"),
])
def test_start_again_url(hub_url, base_url, expected):
    url = start_again_url({**REQUEST, "memory": 1.5}, hub_url=hub_url, base_url=base_url)
    assert url.startswith(expected)
    expected = {**{k: str(v) for k, v in REQUEST.items()}, "memory": "1.5", "cpu": "2", "gpu": "0", "hours": "4"}
    assert dict(parse_qsl(urlsplit(url).query)) == {f"opt-{k}": v for k, v in expected.items()}


def test_image_digest_and_record_name_are_safe():
    record = build_record(request=REQUEST, software={"image": "reg/x:1"}, started=STARTED, user="a/../b",
                          server="", version="0", python="p", packages=[], image_digest="sha256:ab")
    assert record["software"] == {"image": "reg/x:1", "image_digest": "sha256:ab"}
    assert "/" not in record_name(record)


def test_profile_software_per_backend():
    cat = load_catalogue()
    p = cat.profiles[0]
    assert set(profile_software(p, "kubernetes")) == {"image"}
    assert set(profile_software(p, "slurm")) == {"image", "environment"}
    assert set(profile_software(p, "local")) == {"environment"}


def _plan(tmp_path):
    processed = tmp_path / "data/MX-1001/processed"
    processed.mkdir(parents=True)
    plan = MountPlan(root="proposals", proposals=("MX-1001",), mounts=(
        MountEntry(path="proposals/MX-1001/raw", source=str(tmp_path / "raw"), read_only=True, proposal="MX-1001"),
        MountEntry(path="proposals/MX-1001/processed", source=str(processed), read_only=False, proposal="MX-1001"),
    ), notices=())
    return plan, processed


def test_session_writes_its_record_into_the_processed_folder(tmp_path):
    plan, processed = _plan(tmp_path)
    env = {REQUEST_ENV: json.dumps(REQUEST), SOFTWARE_ENV: json.dumps({"environment": {}}),
           "JUPYTERHUB_USER": "alice", "JUPYTERHUB_BASE_URL": "/"}
    path = write_session_record(plan, env, now=STARTED)
    assert path == processed / ".daas-hub/provenance/20260301T093005Z-alice-default.json"
    record = json.loads(path.read_text())
    assert record["request"] == REQUEST and any(p.startswith("daas-hub==") for p in record["packages"])
    with pytest.raises(FileExistsError):
        write_record(record, str(processed))  # never overwrites


@pytest.mark.parametrize("request_", [None, {**REQUEST, "proposal": "none"}, {**REQUEST, "proposal": "EC-2002"}])
def test_no_record_without_a_proposal_processed_folder(tmp_path, request_):
    plan, processed = _plan(tmp_path)
    env = {REQUEST_ENV: json.dumps(request_)} if request_ else {}
    assert write_session_record(plan, env, now=STARTED) is None
    assert not (processed / ".daas-hub").exists()


def test_cli_prints_the_record_and_says_when_the_software_changed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DAAS_HUB_SETTINGS", raising=False)
    cat = load_catalogue()
    p = cat.profiles[0]
    backend = p.backends[0]
    req = {**REQUEST, "profile": p.slug, "backend": backend}
    record = build_record(request=req, software=profile_software(p, backend), started=STARTED, user="alice",
                          server="default", version="0.1.0", python="p", packages=[])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record))
    assert cli.main(["provenance", str(path)]) == 0
    out = capsys.readouterr().out
    assert record["start_again_url"] in out and "same image/environment" in out

    record["software"] = {"image": "old/image:1", "environment": "module load old"}
    path.write_text(json.dumps(record))
    assert cli.main(["provenance", str(path)]) == 1
    out = capsys.readouterr().out
    assert "NOT the same software" in out and "old/image:1" in out

    lines, changed = describe({**record, "profile": "gone"}, cat)
    assert changed == ['the profile "gone" is no longer in the catalogue']


def test_cli_unreadable_record_is_a_sentence(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text("[1, 2]")
    assert cli.main(["provenance", str(path)]) == 2
    assert "not a provenance record" in capsys.readouterr().err


def test_the_stop_time_is_written_into_the_record(tmp_path):
    from datetime import UTC, datetime

    from daas_hub.provenance import record_stop

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"started": "2026-03-01T09:30:05Z", "stopped": None}))
    record_stop(str(path), now=datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC))
    assert json.loads(path.read_text()) == {"started": "2026-03-01T09:30:05Z", "stopped": "2026-03-01T12:00:00Z"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary file left


def test_the_session_start_up_imports_no_schema_checker():
    """daas-hub-session runs before every session's server and imports this module: jsonschema
    (0.8 CPU-s here, compiling a grammar at import) must not come with it."""
    import subprocess
    import sys

    code = ("import sys, daas_hub.session, daas_hub.provenance; "
            "sys.exit('jsonschema' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
