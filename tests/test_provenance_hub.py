"""Provenance end to end on a real JupyterHub (local backend, demo site): the session writes
its record into the proposal's processed folder, and opening the record's start-again link
starts a session with the same request, profile software and package lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.hub


def records(folder):
    prov = folder / ".daas-hub/provenance"
    return set(prov.glob("*.json")) if prov.is_dir() else set()


def test_session_writes_its_record_and_start_again_gets_the_same_session(hub, demo_site):
    processed = demo_site / "data/id11/MX-1001/processed"
    before = records(processed)
    r = hub.login("bob")
    assert r.status_code == 302, r.text[:300]
    session = r.session
    r = hub.submit_form(session, "bob", proposal="MX-1001", cpu=1, memory=1.5, hours=1)
    assert r.status_code == 200, r.text[:500]
    hub.wait_ready("bob")
    try:
        (path,) = records(processed) - before
        record = json.loads(path.read_text())
        if os.geteuid() == 0:  # written as the session's account, never as root
            assert path.stat().st_uid != 0
        assert record["user"] == "bob" and record["proposal"] == "MX-1001"
        assert record["resources"] == {"cpu": 1, "memory": 1.5, "gpu": 0, "hours": 1.0}
        assert record["backend"] == "local" and record["daas_hub_version"]
        assert any(p.startswith("jupyterhub==") for p in record["packages"]), "the session's packages"
        assert record["start_again_url"].startswith("/hub/spawn?opt-proposal=MX-1001&")
        assert record["stopped"] is None
    finally:
        hub.stop_server("bob")
    # the server's exit hook wrote the stop time when the hub stopped it
    record = json.loads(path.read_text())
    assert record["stopped"] and record["stopped"] >= record["started"]

    # the CLI: the record, the link, and the catalogue still gives the profile the same software
    out = subprocess.run([sys.executable, "-m", "daas_hub.cli", "provenance", str(path)], capture_output=True,
                         text=True, env={**os.environ, "DAAS_HUB_SETTINGS": str(demo_site / "site.yaml")},
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "same image/environment" in out.stdout and record["start_again_url"] in out.stdout

    # "start as recorded": the link starts a session with exactly the recorded request
    seen = records(processed)
    r = session.get(hub.url + record["start_again_url"], timeout=60)
    assert r.status_code == 200, r.text[:500]
    model = hub.wait_ready("bob")
    try:
        assert model["servers"][""]["user_options"] == record["request"]
        (again,) = records(processed) - seen
        second = json.loads(again.read_text())
        for key in ("request", "profile", "backend", "resources", "software", "packages_sha256"):
            assert second[key] == record[key], key
    finally:
        hub.stop_server("bob")
