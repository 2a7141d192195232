"""Provenance end to end on a real JupyterHub (local backend, demo site): the session writes
its record into the proposal's processed folder, and the record's start-again link opens
the spawn form prefilled with the recorded request."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import form_values

pytestmark = pytest.mark.hub


def records(folder):
    prov = folder / ".daas-hub/provenance"
    return sorted(prov.glob("*.json")) if prov.is_dir() else []


def test_session_writes_its_record_and_start_again_prefills_the_form(hub, demo_site):
    processed = demo_site / "data/id11/MX-1001/processed"
    before = set(records(processed))
    r = hub.login("bob")
    assert r.status_code == 302, r.text[:300]
    session = r.session
    r = hub.submit_form(session, "bob", proposal="MX-1001", cpu=1, memory=1.5, hours=1)
    assert r.status_code == 200, r.text[:500]
    hub.wait_ready("bob")
    try:
        (path,) = set(records(processed)) - before
        record = json.loads(path.read_text())
        if os.geteuid() == 0:  # written as the session's account, never as root
            assert path.stat().st_uid != 0
        assert record["user"] == "bob" and record["proposal"] == "MX-1001"
        assert record["resources"] == {"cpu": 1, "memory": 1.5, "gpu": 0, "hours": 1.0}
        assert record["backend"] == "local" and record["daas_hub_version"]
        assert any(p.startswith("jupyterhub==") for p in record["packages"]), "the session's packages"
        assert record["start_again_url"].startswith("/hub/spawn?")
    finally:
        hub.stop_server("bob")

    # "start as recorded": the link opens the form with exactly the recorded request
    r = session.get(hub.url + record["start_again_url"], timeout=60)
    assert r.status_code == 200 and 'id="daas-options"' in r.text, r.text[:500]
    form = form_values(r.text)
    expected = {k: str(v) for k, v in record["request"].items()}
    got = {k: form.get(k) for k in expected}
    for k in ("memory", "hours", "cpu", "gpu"):
        got[k], expected[k] = float(got[k]), float(expected[k])
    assert got == expected

    # and the CLI says the catalogue still gives this profile the same software
    out = subprocess.run([sys.executable, "-m", "daas_hub.cli", "provenance", str(path)], capture_output=True,
                         text=True, env={**os.environ, "DAAS_HUB_SETTINGS": str(demo_site / "site.yaml")},
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "same image/environment" in out.stdout and record["start_again_url"] in out.stdout
