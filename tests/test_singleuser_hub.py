"""Language servers switched back on the documented way (docs/local-backend.md), on a real hub.

A real JupyterHub + configurable-http-proxy on the demo site (local backend), with the
one line docs/local-backend.md gives sites that install language servers::

    c.LocalSpawner.args = ["--ServerApp.jpserver_extensions={'jupyter_lsp': True}"]

alice's session (the installed ``daas-hub-singleuser``, started by the hub on a free
loopback port with a fresh home) starts, answers through the proxy, and serves
jupyter_lsp's ``/lsp/status``; the sessions' other switches stay (the HDF5 endpoints
still deferred). Before the fix the session exited at start: traitlets saw the option
twice ("expected a dict, not the list"). The merge itself, and malformed values:
tests/test_singleuser.py.
"""

from __future__ import annotations

import re

import pytest
import requests

from conftest import REPO, start_hub, stop_process

pytestmark = pytest.mark.hub

SITE_LINE = "c.LocalSpawner.args = [\"--ServerApp.jpserver_extensions={'jupyter_lsp': True}\"]"


@pytest.fixture
def hub(fresh_demo_site):
    h = start_hub(fresh_demo_site, extra_config=SITE_LINE)
    try:
        yield h
    finally:
        if h.proc.poll() is None:
            h.stop_all_servers()
        stop_process(h.proc, timeout=60)


def test_the_documented_line_switches_language_servers_on(hub):
    assert SITE_LINE in (REPO / "docs/local-backend.md").read_text()  # the docs' own line, verbatim
    hub.api("POST", "/users/alice")  # created by an admin (201), or already there (409)
    r = hub.api("POST", "/users/alice/server", json={})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=240)

    assert hub.server_api("alice", "GET", "/status").status_code == 200  # the session answers
    r = requests.get(f"{hub.url}/user/alice/lsp/status", headers={"Authorization": f"token {hub.token}"},
                     timeout=60)
    assert r.status_code == 200, r.text[:500]  # jupyter_lsp's own handler: the extension is on
    assert r.json()["version"] == 2 and "sessions" in r.json(), r.text[:500]

    log = hub.log_text()
    assert "expected a dict" not in log, log[-3000:]
    loaded = set(re.findall(r"\] (\S+) \| extension was successfully loaded", log))
    assert {"jupyter_lsp", "daas_hub.lazy_h5web"} <= loaded, sorted(loaded)  # the other switches stayed
    assert "jupyterlab_h5web" not in loaded, sorted(loaded)


def test_session_settings_on_the_wrong_class_are_named_in_the_log(fresh_demo_site):
    """``c.DaasSpawner.args`` never reaches the backend's spawner: the hub says so, once."""
    h = start_hub(fresh_demo_site, extra_config=SITE_LINE.replace("c.LocalSpawner.", "c.DaasSpawner."))
    try:
        for user in ("alice", "bob"):  # each builds its spawner for the form
            r = h.signed_in(user).get(f"{h.url}/hub/spawn", timeout=60)
            assert r.status_code == 200, r.text[:500]
        log = h.log_text()
        assert log.count("c.DaasSpawner.args is set but does nothing") == 1, log[-3000:]
        assert "Set c.Spawner.args (every backend) or c.LocalSpawner.args" in log
    finally:
        stop_process(h.proc, timeout=60)
