"""The spawn form on a real hub (the demo site, local backend): prefill, permalinks,
refusals shown in the form, named servers within the quota, the quota page.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

pytestmark = pytest.mark.hub


def text(r) -> str:
    return re.sub(r"\s+", " ", r.text)


def test_form_offers_own_proposals_and_profiles_by_instrument(hub):
    session = hub.signed_in("alice")
    r = session.get(f"{hub.url}/hub/spawn", timeout=60)
    assert r.status_code == 200
    page = text(r)
    options = re.findall(r'<option value="([^"]+)" data-instrument="([^"]*)"', r.text)
    assert options == [("MX-1001", "ID11"), ("IH-5005", "ID21")]  # HC-3003 is archived
    assert "none" not in dict(options)  # alice is no staff: no "no proposal"
    assert '"instruments": ["ID11", "ID15A", "ID31", "P02.1", "MS-X04SA"]' in r.text  # the filter's data
    assert "Your quota (user)" in page
    assert 'href="/hub/quota" id="daas-quota-link"' in r.text
    ours = r.text.split('id="daas-options"')[1].split('id="spawn_form"')[0]
    assert "<script src" not in ours and "http://" not in ours and "https://" not in ours  # no outside assets


def test_staff_may_choose_no_proposal(hub):
    session = hub.signed_in("dave")
    form = session.get(f"{hub.url}/hub/spawn", timeout=60).text
    assert '<option value="none"' in form and "Your quota (staff)" in form


def test_forged_permalink_shows_the_form_with_the_reason(hub):
    session = hub.signed_in("bob")
    query = urlencode({"opt-proposal": "MX-1001", "opt-profile": "diffraction", "opt-cpu": "999"})
    r = session.get(f"{hub.url}/hub/spawn?{query}", timeout=60)
    assert r.status_code == 400
    page = text(r)
    assert "cpu: 999 is out of range; allowed: 1 to 32 CPUs" in page
    # prefilled from the permalink, so the person only fixes the bad value
    assert re.search(r'<option value="diffraction"[^>]*selected', r.text)
    assert hub.api("GET", "/users/bob").json()["servers"] == {}


def test_permalink_starts_the_chosen_session_and_the_form_remembers_it(hub):
    session = hub.signed_in("bob")
    query = urlencode({"opt-proposal": "EC-2002", "opt-profile": "spectroscopy", "opt-cpu": "1", "opt-memory": "2"})
    r = session.get(f"{hub.url}/hub/spawn?{query}", timeout=60)
    assert r.status_code == 200, r.text[:300]
    hub.wait_ready("bob")
    try:
        quota = text(session.get(f"{hub.url}/hub/quota", timeout=60))
        assert "EC-2002" in quota and "spectroscopy" in quota
    finally:
        hub.stop_server("bob")
    form = hub.spawn_form(session, "bob")
    assert (form["proposal"], form["profile"], form["cpu"], form["memory"]) == ("EC-2002", "spectroscopy", "1", "2.0")


def test_named_servers_one_per_proposal_and_profile_within_the_quota(hub):
    session = hub.signed_in("alice")
    try:
        assert hub.submit_form(session, "alice", "mx-python", proposal="MX-1001", profile="python",
                               cpu=1, memory=1).status_code == 200
        hub.wait_ready("alice", server="mx-python")
        # the same proposal and profile again: refused, naming what runs
        r = hub.submit_form(session, "alice", "again", proposal="MX-1001", profile="python", cpu=1, memory=1)
        assert r.status_code == 400 and "already have a session for proposal MX-1001 with the python profile" in text(r)
        assert hub.submit_form(session, "alice", "ih-spectro", proposal="IH-5005", profile="spectroscopy",
                               cpu=1, memory=1).status_code == 200
        hub.wait_ready("alice", server="ih-spectro")
        page = text(session.get(f"{hub.url}/hub/quota", timeout=60))
        assert re.search(r"Sessions</td><td>2</td><td>2</td><td>0</td>", page), page[-2000:]
        # a third session exceeds the user quota (2 sessions)
        r = hub.submit_form(session, "alice", "third", proposal="IH-5005", profile="python", cpu=1, memory=1)
        assert r.status_code == 400
        assert "sessions: your quota allows 2 session(s) at once and you have 2" in text(r)
    finally:
        for name in ("mx-python", "ih-spectro", "third", "again"):
            hub.stop_server("alice", server=name)
