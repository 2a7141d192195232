"""End to end on a real JupyterHub + configurable-http-proxy with the demo site.

Sessions are real JupyterLab servers started by the local backend as the
unprivileged demo account; their proposals folders are read back through the
proxy with the Jupyter contents API.
"""

from __future__ import annotations

import os
import pwd
import re

import pytest
import yaml

pytestmark = pytest.mark.hub

EXPECTED = {
    "alice": {"MX-1001", "HC-3003", "IH-5005"},
    "bob": {"MX-1001", "EC-2002"},
    "carol": {"HC-3003", "LS-4004"},
}


def listing(hub, user, path):
    r = hub.server_api(user, "GET", f"/contents/{path}")
    assert r.status_code == 200, r.text
    return {c["name"]: c["type"] for c in r.json()["content"]}


def login_and_wait(hub, user):
    r = hub.login(user)
    assert r.status_code == 302, f"{user}: {r.status_code} {r.text[:500]}"
    # follow the hub's redirects as a browser would: /hub/ -> /hub/spawn (the form, prefilled)
    session = r.session
    r = session.get(hub.url + r.headers["location"], timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert 'id="daas-options"' in r.text, "the spawn form"
    r = hub.submit_form(session, user)  # one click: Start with the prefilled choice
    assert r.status_code == 200, r.text[:500]
    return hub.wait_ready(user)


@pytest.mark.parametrize("user", sorted(EXPECTED))
def test_user_sees_only_their_own_proposals(hub, user):
    login_and_wait(hub, user)
    try:
        assert set(listing(hub, user, "proposals")) == EXPECTED[user]
    finally:
        hub.stop_server(user)


def test_archived_listed_not_mounted_embargoed_mounted(hub):
    login_and_wait(hub, "carol")
    try:
        assert listing(hub, "carol", "proposals/HC-3003") == {"ARCHIVED-README.txt": "file"}
        r = hub.server_api("carol", "GET", "/contents/proposals/HC-3003/ARCHIVED-README.txt")
        text = r.json()["content"]
        assert "archived" in text and "data portal" in text and "https://data.demo.invalid" in text
        assert listing(hub, "carol", "proposals/LS-4004") == {"raw": "directory", "processed": "directory"}
        assert "tooth_projections.h5" in listing(hub, "carol", "proposals/LS-4004/raw")
    finally:
        hub.stop_server("carol")


def test_session_runs_unprivileged_raw_read_only_processed_writable(hub, demo_site):
    login_and_wait(hub, "alice")
    try:
        demo_uid = pwd.getpwnam("daas-demo").pw_uid if os.geteuid() == 0 else os.geteuid()
        r = hub.server_api("alice", "PUT", "/contents/proposals/MX-1001/processed/notes.txt",
                           json={"type": "file", "format": "text", "content": "integrated ring 1"})
        assert r.status_code == 201, r.text
        written = demo_site / "data/id11/MX-1001/processed/notes.txt"
        assert written.stat().st_uid == demo_uid != 0
        if os.geteuid() == 0:
            r = hub.server_api("alice", "PUT", "/contents/proposals/MX-1001/raw/tampered.txt",
                               json={"type": "file", "format": "text", "content": "x"})
            assert r.status_code in (403, 500), r.text
            assert "Permission denied" in r.text
            assert not (demo_site / "data/id11/MX-1001/raw/tampered.txt").exists()
        # the home belongs to the session account too
        assert (demo_site / "homes/alice").stat().st_uid == demo_uid
    finally:
        hub.stop_server("alice")


def test_user_on_no_proposal_gets_a_clear_message_and_no_session(hub):
    r = hub.login("erin")
    assert r.status_code == 403
    text = re.sub(r"\s+", " ", r.text)
    assert "not on any proposal at DEMO Light Source" in text
    assert "DEMO User Office" in text
    assert hub.api("GET", "/users/erin").status_code == 404  # no user, no server, no state


def test_staff_without_proposal_and_instructor_get_sessions(hub):
    for user, expected in (("ivan", set()), ("dave", {"MX-1001", "IH-5005"})):
        login_and_wait(hub, user)
        try:
            assert set(listing(hub, user, "proposals")) == expected
        finally:
            hub.stop_server(user)
    assert hub.api("GET", "/users/dave").json()["admin"] is True
    assert hub.api("GET", "/users/ivan").json()["admin"] is False


def test_proposal_groups_follow_membership(hub):
    login_and_wait(hub, "bob")
    hub.stop_server("bob")
    groups = set(hub.api("GET", "/users/bob").json()["groups"])
    assert groups == {"proposal-MX-1001", "proposal-EC-2002"}


def test_removed_proposal_disappears_and_loses_nothing(hub, demo_site):
    """Stale state: the catalogue changes between two sessions of the same user."""
    path = demo_site / "proposals.yaml"
    original = path.read_text()
    doc = yaml.safe_load(original)
    doc["proposals"].append({
        "id": "TMP-9009", "title": "Short-lived", "instrument": "ID21",
        "members": [{"username": "bob", "role": "pi"}],
        "data": {"raw": "data/id21/EC-2002/raw"},
    })
    try:
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 2))
        login_and_wait(hub, "bob")
        assert "TMP-9009" in listing(hub, "bob", "proposals")
        r = hub.server_api("bob", "PUT", "/contents/proposals/TMP-9009/my-notes.txt",
                           json={"type": "file", "format": "text", "content": "keep me"})
        assert r.status_code == 201, r.text
        hub.stop_server("bob")

        path.write_text(original)
        os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 4))
        r = hub.api("POST", "/users/bob/server")  # refresh_pre_spawn re-reads the catalogue
        assert r.status_code in (201, 202), r.text
        hub.wait_ready("bob")
        folder = listing(hub, "bob", "proposals/TMP-9009")
        assert folder == {"my-notes.txt": "file"}, "links removed, the user's own file kept"
        assert set(hub.api("GET", "/users/bob").json()["groups"]) == {"proposal-MX-1001", "proposal-EC-2002"}
    finally:
        path.write_text(original)
        hub.stop_server("bob")


def spawn_failure_message(hub, user) -> str:
    """Log in, press Start in the prefilled form, and return the failure the hub shows there."""
    r = hub.login(user)
    assert r.status_code == 302, r.text[:300]
    session = r.session
    session.get(hub.url + r.headers["location"], timeout=60)
    r = hub.submit_form(session, user)
    assert r.status_code >= 400, r.text[:300]
    assert "Traceback" not in r.text
    (message,) = re.findall(r'class="spawn-error-msg[^"]*">(.*?)</p>', r.text, re.S)
    return re.sub(r"\s+", " ", message)


def test_missing_home_folder_is_a_sentence_not_a_traceback(hub, demo_site):
    homes = demo_site / "homes"
    away = demo_site / "homes.away"
    homes.rename(away)
    try:
        message = spawn_failure_message(hub, "ivan")
        # the person reads a sentence and a reference; the path and the fix are in the hub's log
        assert "Your session has no usable home folder, so it was not started" in message
        assert str(homes) not in message and "c.LocalSpawner" not in message
        ref = re.search(r"Reference ([0-9a-f]{8})", message).group(1)
        logged = re.search(rf"\[{ref}\] home: (.*)", hub.log_text()).group(1)
        assert f"home_root {homes} cannot be used" in logged and "create it (owned by root, mode 0755)" in logged
        assert not hub.api("GET", "/users/ivan").json()["servers"]
    finally:
        away.rename(homes)
    login_and_wait(hub, "ivan")  # once the admin fixes it, the next start works
    hub.stop_server("ivan")


def test_removing_the_admin_role_removes_hub_admin(hub, demo_site):
    path = demo_site / "proposals.yaml"
    original = path.read_text()
    doc = yaml.safe_load(original)
    login_and_wait(hub, "dave")
    hub.stop_server("dave")
    assert hub.api("GET", "/users/dave").json()["admin"] is True
    for account in doc["accounts"]:
        if account["username"] == "dave":
            account["roles"] = ["staff"]
    try:
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 6))
        login_and_wait(hub, "dave")
        assert hub.api("GET", "/users/dave").json()["admin"] is False
    finally:
        path.write_text(original)
        os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 8))
        hub.stop_server("dave")
