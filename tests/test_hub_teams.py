"""Sharing a session with the team, on the demo hub with real Chromium.

alice's session on MX-1001 (members: alice, bob, dave) is shared with bob from
JupyterLab's Share button (which opens the hub's sharing page); bob opens it and edits a notebook while alice, in her own
browser, sees the edit (real-time collaboration, jupyter-collaboration), each shown to
the other by their name from the catalogue. carol
(not on MX-1001) cannot be invited, neither on the page nor through the REST API
(ours: 400 with the sentence; JupyterHub's own: 403, users have no ``shares``
scope). Revoking ends bob's access at once: his next request is refused and the
connections he has open (kernel, collaboration room) are closed by the session
(daas_hub.spawners.visitors); stopping the session ends every share.
"""

from __future__ import annotations

import re

import pytest
import requests

from conftest import wait_until

pytestmark = [pytest.mark.hub, pytest.mark.browser]
LAB = 240_000


def authorize(page) -> None:
    """Confirm JupyterHub's "Authorize access" page, shown before opening another person's session."""
    page.wait_for_url(re.compile(r".*(/hub/api/oauth2/authorize|/user/).*"), timeout=120_000)
    if "/oauth2/authorize" in page.url:
        page.click("button[type=submit]:has-text('Authorize')")


def keep_waiting(page) -> None:
    """On a loaded machine JupyterLab may ask what to do about a slow document: keep waiting
    (or accept whatever else it asks, e.g. the kernel)."""
    dialog = page.locator(".jp-Dialog")
    for _ in range(20):
        if dialog.count() == 0:
            return
        button = dialog.locator("button:has-text('Continue waiting'), button.jp-mod-accept")
        if button.count():
            button.first.click()
        page.wait_for_timeout(1000)


def start_session(hub, user):
    r = hub.login(user)
    session = r.session
    r = hub.submit_form(session, user)
    assert r.status_code == 200, r.text[:300]
    hub.wait_ready(user, timeout=240)
    return session


def login(browser, hub, user):
    context = browser.new_context(viewport={"width": 1300, "height": 850})
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.click(f"#daas-login-{user}")
    page.wait_for_load_state()
    return context, page


def names_shown(page) -> list[str]:
    """The collaborators a JupyterLab page shows: the collaborators' list, the labels of other
    people's cursors and the top bar's collaborator icons."""
    return page.evaluate("""() => [
        ...[...document.querySelectorAll('.jp-CollaboratorsPanel .jp-CollaboratorHeader > span, '
                                         + '.jp-remote-userFlag-name')].map(e => e.textContent),
        ...[...document.querySelectorAll('.jp-MenuBar-anonymousIcon, .jp-MenuBar-imageIcon')].map(e => e.title)]""")


def api(hub, session, method, path, **kw):
    return session.request(method, f"{hub.url}/hub/api{path}", timeout=30,
                           headers={"X-XSRFToken": session.cookies.get("_xsrf", path="/hub/")}, **kw)


def test_share_edit_together_refuse_outsiders_revoke(hub, browser):
    alice_http = start_session(hub, "alice")
    try:
        hub.server_api("alice", "PUT", "/contents/team.ipynb", json={"type": "notebook", "content": {
            "cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [],
                       "execution_count": None}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}}).raise_for_status()
        alice, apage = login(browser, hub, "alice")
        # alice shares from JupyterLab: its Share button (top bar) opens the hub's sharing page in a new tab
        apage.goto(f"{hub.url}/user/alice/lab/tree/team.ipynb")
        apage.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=LAB)
        keep_waiting(apage)
        with alice.expect_page(timeout=60_000) as opened:
            apage.locator('[data-jp-item-name="daas-share"] jp-button[aria-label="Share"]').click()
        spage = opened.value
        spage.wait_for_url(f"{hub.url}/hub/share", timeout=60_000)
        # the page offers the proposal's members only
        offered = {el.get_attribute("value") for el in spage.locator(".daas-member").all()}
        assert offered == {"bob", "dave"}
        # outsiders: the REST API (ours refuses with the sentence; JupyterHub's own with 403)
        r = api(hub, alice_http, "POST", "/daas/shares/alice/", json={"users": ["carol"]})
        assert r.status_code == 400 and "carol is not a member of proposal MX-1001" in r.text, r.text
        r = api(hub, alice_http, "POST", "/shares/alice/", json={"user": "carol"})
        assert r.status_code == 403, r.text
        # ... and a forged page post
        r = alice_http.post(f"{hub.url}/hub/share", timeout=30, data={
            "_xsrf": alice_http.cookies.get("_xsrf", path="/hub/"), "server": "", "action": "share",
            "member": "carol"})
        assert r.status_code == 400 and "carol is not a member of proposal MX-1001" in r.text
        # share with bob from the page
        spage.locator('.daas-member[value="bob"]').check()
        spage.click(".daas-share-chosen")
        spage.wait_for_selector("#daas-share-message")
        assert api(hub, alice_http, "GET", "/daas/shares/alice/").json()["shared_with"] == ["bob"]

        # bob edits, alice sees it
        bob, bpage = login(browser, hub, "bob")
        bob_sockets = []
        bpage.on("websocket", lambda ws: bob_sockets.append(ws))
        bpage.goto(f"{hub.url}/hub/share")
        assert bpage.locator("#daas-shared-with-me a").count() == 1
        bpage.goto(f"{hub.url}/user/alice/lab/tree/team.ipynb")
        authorize(bpage)  # JupyterHub asks bob to confirm access to alice's session
        for page in (bpage, apage):
            page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=LAB)
            keep_waiting(page)
        keep_waiting(bpage)
        bpage.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
        bpage.keyboard.press("End")
        bpage.keyboard.type("  # bob was here")
        wait_until(lambda: "bob was here" in apage.locator(".jp-Notebook .jp-Cell .cm-content").first.inner_text(),
                   timeout=60, what="alice sees bob's edit")
        # each is shown to the other by name (the catalogue's display name), never "Anonymous"
        wait_until(lambda: "Bob Bragg" in names_shown(apage), timeout=60, what="alice sees Bob Bragg as a collaborator")
        wait_until(lambda: "Alice Ayrton" in names_shown(bpage), timeout=60,
                   what="bob sees Alice Ayrton as a collaborator")
        assert "Anonymous" not in names_shown(apage) + names_shown(bpage)

        # revoke: bob's access ends at once, and so do the connections he has open
        open_before = [ws for ws in bob_sockets if not ws.is_closed()
                       and re.search(r"/kernels/[^/]+/channels|/collaboration/room/json:notebook", ws.url)]
        assert {("kernel" if "/kernels/" in ws.url else "room") for ws in open_before} == {"kernel", "room"}, \
            [ws.url for ws in bob_sockets]
        spage.goto(f"{hub.url}/hub/share")  # alice's JupyterLab stays open in its own tab
        spage.locator('.daas-share-session input[name=member][value="bob"]').first.check()
        spage.click(".daas-revoke")
        spage.wait_for_selector("#daas-share-message")
        r = bob.request.get(f"{hub.url}/user/alice/api/contents", max_redirects=0)
        assert r.status in (302, 403), r.status
        for _ in range(40):  # the session closed them before the revoke answered; let the browser see it
            if all(ws.is_closed() for ws in open_before):
                break
            bpage.wait_for_timeout(250)
        assert all(ws.is_closed() for ws in open_before), [ws.url for ws in open_before if not ws.is_closed()]
        assert re.search(r"connection\(s\) of people it is no longer shared with closed", hub.log_text())
        assert api(hub, alice_http, "GET", "/daas/shares/alice/").json()["shared_with"] == []

        # share again, then stop: the share ends with the session
        api(hub, alice_http, "POST", "/daas/shares/alice/", json={"users": ["bob"]}).raise_for_status()
        hub.stop_server("alice")
        assert 'id="daas-shared-with-me"' not in bob.request.get(f"{hub.url}/hub/share").text()
        assert re.search(r"Sharing of .* ended", hub.log_text())
    finally:
        hub.stop_server("alice")


def test_revoke_when_the_session_does_not_answer(hub, browser):
    """The session is frozen (SIGSTOP, by its PID) while alice revokes bob's share: the revoke
    still succeeds after the hub's bounded wait (10 s), the hub logs a warning, and once the
    session runs again bob's next request is refused (his OAuth token for it is gone)."""
    import os
    import signal

    from test_faults import session_pid

    alice_http = start_session(hub, "alice")
    pid = None
    try:
        api(hub, alice_http, "POST", "/daas/shares/alice/", json={"users": ["bob"]}).raise_for_status()
        bob, bpage = login(browser, hub, "bob")
        bpage.goto(f"{hub.url}/user/alice/lab")
        authorize(bpage)
        bpage.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=120_000)
        assert bob.request.get(f"{hub.url}/user/alice/api/contents", max_redirects=0).status == 200
        # the recheck answers the owner only: bob, a visitor, is refused with the sentence
        xsrf = next(c["value"] for c in bob.cookies() if c["name"] == "_xsrf" and c["path"] == "/hub/")
        r = bob.request.post(f"{hub.url}/hub/api/users/bob/tokens", headers={"X-XSRFToken": xsrf},
                             data={"scopes": ["access:servers!server=alice/"], "note": "recheck test"})
        assert r.status == 201, r.text()
        r = requests.post(f"{hub.url}/user/alice/api/daas/visitors/recheck", timeout=30,
                          headers={"Authorization": f"token {r.json()['token']}"})
        assert r.status_code == 403 and "Only the owner of this session" in r.text, r.text
        pid = session_pid(hub, "alice")
        os.kill(pid, signal.SIGSTOP)
        r = api(hub, alice_http, "DELETE", "/daas/shares/alice/", json={"users": ["bob"]})
        assert r.status_code == 200 and r.json()["shared_with"] == [], r.text
        assert "could not close the connections of people it is no longer shared with" in hub.log_text()
        os.kill(pid, signal.SIGCONT)
        pid = None
        r = bob.request.get(f"{hub.url}/user/alice/api/contents", max_redirects=0)
        assert r.status in (302, 403), r.status
        bob.close()
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        hub.stop_server("alice")
