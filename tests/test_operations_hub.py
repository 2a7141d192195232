"""Operations against a real hub: lifetimes, announcements, metrics, usage across a restart, culling.

The hub's operations clock is injected (``tests/hub_clock.py``): lifetimes,
announcements and usage records see only the time the test writes, so nothing
depends on how fast this machine is. The idle culler is the hub's own managed
service (the default path), with short intervals; it and the hub's activity
tracking run on real time, so that test waits (bounded) instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
import requests
import yaml

from conftest import BIN, OUTPUT, REPO, make_world_dir, start_hub, stop_process, wait_until

pytestmark = [pytest.mark.hub]

T0 = 1_900_000_000.0  # the injected clock's start (2030)
CULL_TIMEOUT = 20  # s
ACTIVITY_INTERVAL = 5  # s


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


class Site:
    def __init__(self, folder, clock_file):
        self.folder = folder
        self.clock_file = clock_file
        self.hub = None

    def set_clock(self, t: float) -> None:
        self.clock_file.write_text(repr(float(t)))

    def start(self):
        self.hub = start_hub(
            self.folder,
            extra_args=[f"--JupyterHub.last_activity_interval={ACTIVITY_INTERVAL}",
                        f"--LocalSpawner.environment=JUPYTERHUB_ACTIVITY_INTERVAL={ACTIVITY_INTERVAL}"],
            env={"PYTHONPATH": str(REPO / "tests"), "DAAS_TEST_CLOCK_FILE": str(self.clock_file)},
            extra_config=("c.Operations.clock = 'hub_clock.now'\n"
                          "c.Spawner.poll_interval = 1\n"
                          "c.Operations.max_extension = 100\n"
                          "c.JupyterHub.authenticate_prometheus = False\n"),
        )
        return self.hub

    def stop(self):
        if self.hub:
            stop_process(self.hub.proc, timeout=60)
            shutil.copy(self.hub.log, OUTPUT / f"operations-{self.hub.log.name}")
            self.hub = None


@pytest.fixture(scope="module")
def site():
    from daas_hub.demo import ensure_demo_site

    OUTPUT.mkdir(exist_ok=True)
    folder = make_world_dir("daas-hub-ops-")
    settings = ensure_demo_site(folder)
    doc = yaml.safe_load(settings.read_text())
    doc["operations"] = {"culling": {"timeout": CULL_TIMEOUT, "every": 5},
                         "lifetimes": {"warning": 600, "notice_refresh": 5}}
    settings.write_text(yaml.safe_dump(doc))
    s = Site(folder, folder / "clock")
    s.set_clock(T0)
    s.start()
    yield s
    s.stop()
    shutil.rmtree(folder, ignore_errors=True)


def start_session(hub, user: str, server: str = "", **overrides):
    r = hub.login(user)
    session = r.session
    r = hub.submit_form(session, user, server, **overrides)
    assert r.status_code == 200, r.text[:500]
    hub.wait_ready(user, server=server)
    return session


def stop_all(hub, user: str):
    for name in list(hub.api("GET", f"/users/{user}").json().get("servers", {})):
        hub.stop_server(user, server=name)


def record_of(site, user):
    from daas_hub.usage import OperationsStore

    store = OperationsStore(site.folder / "hub" / "daas-operations.sqlite")
    return [r for r in store.sessions() if r.user == user]


def home_text(hub, session) -> str:
    r = session.get(f"{hub.url}/hub/home", timeout=30)
    assert r.status_code == 200
    return r.text


def test_a_session_is_warned_extended_within_quota_refused_beyond_and_stopped(site):
    hub = site.hub
    site.set_clock(T0)
    session = start_session(hub, "alice", hours=4)
    try:
        text = home_text(hub, session)
        assert re.search(r'class="daas-time-left">4 h 00 min', text), text[:3000]
        assert "stops soon" not in text
        site.set_clock(T0 + 4 * 3600 - 300)  # five minutes left: the notice shows
        text = home_text(hub, session)
        assert re.search(r'class="daas-time-left">5 min\s*<span class="badge bg-danger daas-stop-notice">', text)
        js = session.get(f"{hub.url}/hub/daas/notices.js?server=", timeout=30).text
        assert '"phase": "warning"' in js and '"left": "5 min"' in js

        xsrf = session.cookies.get("_xsrf")
        r = session.post(f"{hub.url}/hub/daas/extend", data={"server": "", "hours": "1", "_xsrf": xsrf}, timeout=30)
        assert r.status_code == 200 and r.url.endswith("/hub/home")
        assert re.search(r'class="daas-time-left">1 h 05 min', r.text)

        # the user quota holds 24 h in all; this session holds 5 h now
        r = session.post(f"{hub.url}/hub/daas/extend", data={"server": "", "hours": "20", "_xsrf": xsrf}, timeout=30)
        assert r.status_code == 400
        assert "Not extended: your sessions already hold 5 h of your 24 h quota, so 19 h can be added." in r.text
        assert "Traceback" not in r.text
        assert re.search(r'class="daas-time-left">1 h 05 min', home_text(hub, session))

        site.set_clock(T0 + 5 * 3600)  # the end

        def stopped():
            m = hub.api("GET", "/users/alice").json()
            return not m.get("servers") and not m.get("pending")

        wait_until(stopped, timeout=60, interval=0.5, what="alice's session stopped at its end")
        assert "daas lifetime-over" in hub.log_text()
        last = record_of(site, "alice")[-1]
        assert (last.state, last.detail, last.hours, last.ended - last.started) == ("ended", "lifetime", 5.0, 5 * 3600)
    finally:
        stop_all(hub, "alice")


def test_an_announcement_shows_on_hub_pages_and_in_jupyterlab_until_its_end(site, browser):
    hub = site.hub
    site.set_clock(T0)
    admin = hub.login("dave").session
    page_url = f"{hub.url}/hub/daas/admin/announcements"
    assert admin.get(page_url, timeout=30).status_code == 200
    text = "Beamline 11 maintenance on Monday 08:00"
    r = admin.post(page_url, data={"text": text, "level": "warning", "ends": iso(T0 + 3600)[:16],
                                   "_xsrf": admin.cookies.get("_xsrf")}, timeout=30)
    assert r.status_code == 200 and text in r.text
    r = admin.post(page_url, data={"text": "late", "ends": iso(T0 - 60)[:16], "_xsrf": admin.cookies.get("_xsrf")},
                   timeout=30)
    assert r.status_code == 400 and "The end time is in the past" in r.text
    assert "Traceback" not in r.text
    # a person's pages, and the login page of someone not signed in
    assert text in requests.get(f"{hub.url}/hub/login", timeout=30).text
    bob = start_session(hub, "bob")
    try:
        assert text in home_text(hub, bob)
        context = browser.new_context()
        context.add_cookies([{"name": c.name, "value": c.value, "url": hub.url} for c in bob.cookies])
        page = context.new_page()
        page.goto(f"{hub.url}/user/bob/lab")
        page.wait_for_selector("#daas-notices .daas-announcement", timeout=120_000)
        assert page.locator("#daas-notices .daas-announcement").inner_text() == text
        assert "Time left in this session" in page.locator("#daas-notices .daas-time-left").inner_text()
        page.screenshot(path=str(OUTPUT / "operations-lab-notices.png"))
        site.set_clock(T0 + 3600)  # its end
        assert text not in requests.get(f"{hub.url}/hub/login", timeout=30).text
        assert text not in home_text(hub, bob)
        page.wait_for_function("!document.querySelector('#daas-notices .daas-announcement')", timeout=30_000)
        context.close()
    finally:
        stop_all(hub, "bob")


def test_metrics_show_the_sessions_by_proposal(site):
    hub = site.hub
    site.set_clock(T0)
    session = start_session(hub, "alice", hours=2)
    try:
        opts = hub.api("GET", "/users/alice").json()["servers"][""]["user_options"]
        metrics = requests.get(f"{hub.url}/hub/metrics", timeout=30).text
        labels = f'backend="local",profile="{opts["profile"]}",proposal="{opts["proposal"]}",state="running"'
        assert f"daas_sessions{{{labels}}} 1.0" in metrics, metrics[-3000:]
        assert f"daas_requested_cpus{{{labels}}} {float(opts['cpu'])}" in metrics
        assert "daas_proposal_source_seconds_count" in metrics
        assert "jupyterhub_running_servers" in metrics  # the hub's own, same endpoint
        del session
    finally:
        stop_all(hub, "alice")
    metrics = requests.get(f"{hub.url}/hub/metrics", timeout=30).text
    assert 'daas_sessions{backend="local"' not in metrics


def _usage_csv(site, start, end, by="proposal") -> dict:
    out = subprocess.run([str(BIN / "daas-hub"), "usage", "--from", iso(start), "--to", iso(end), "--by", by, "--csv",
                          "--settings", str(site.folder / "site.yaml")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"{by},sessions,session_hours,cpu_hours,gpu_hours"
    return {line.split(",")[0]: [float(x) for x in line.split(",")[1:]] for line in lines[1:]}


def test_usage_matches_the_sessions_across_a_hub_restart_and_plots(site, browser):
    """Two sessions of carol's, one per hub run: the report counts both, to the injected second."""
    base = T0 + 10 * 86400
    site.set_clock(base)
    start_session(site.hub, "carol", hours=4, cpu=2)
    opts = site.hub.api("GET", "/users/carol").json()["servers"][""]["user_options"]
    site.set_clock(base + 1800)
    time.sleep(2)  # a poll (every 1 s) sees it at base + 1800
    site.stop()  # local sessions stop with the hub; the record keeps the end
    site.start()
    site.set_clock(base + 3600)
    start_session(site.hub, "carol", hours=4, cpu=4)
    site.set_clock(base + 3600 + 900)
    stop_all(site.hub, "carol")
    rows = _usage_csv(site, base - 60, base + 7200)
    assert rows[opts["proposal"]] == [2, 0.75, 2 * 0.5 + 4 * 0.25, 0.0]
    assert _usage_csv(site, base - 60, base + 7200, by="user")["carol"][:2] == [2, 0.75]

    context = browser.new_context()
    admin = site.hub.login("dave").session
    context.add_cookies([{"name": c.name, "value": c.value, "url": site.hub.url} for c in admin.cookies])
    page = context.new_page()
    page.goto(f"{site.hub.url}/hub/daas/admin/usage?from={iso(base - 60)[:16]}&to={iso(base + 7200)[:16]}")
    plot = page.locator(f'svg.daas-usage-plot[data-proposal="{opts["proposal"]}"]')
    plot.wait_for(timeout=30_000)
    box = plot.bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    assert page.locator(f'svg[data-proposal="{opts["proposal"]}"] rect.daas-bar').count() == 24
    page.screenshot(path=str(OUTPUT / "operations-usage-page.png"), full_page=True)
    r = requests.get(f"{site.hub.url}/hub/daas/admin/usage", cookies=site.hub.login("alice").session.cookies,
                     timeout=30)
    assert r.status_code == 403 and "This page is for the hub" in r.text
    context.close()


def test_status_lists_running_sessions(site):
    hub = site.hub
    site.set_clock(T0)
    start_session(hub, "alice", hours=1)
    try:
        out = subprocess.run([str(BIN / "daas-hub"), "status", "--settings", str(site.folder / "site.yaml")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert re.search(r"^  local +\S+ +\S+ +1$", out.stdout, re.M), out.stdout
        assert re.search(r"^  alice +1 session\(s\)", out.stdout, re.M), out.stdout
        admin = hub.login("dave").session
        page = admin.get(f"{hub.url}/hub/daas/admin/status", timeout=30).text
        assert "alice" in page and 'id="daas-status-running"' in page
        assert re.search(r"daas spawn-start request_id=\w+ user=alice", hub.log_text())
        assert re.search(r"daas spawn-end request_id=\w+ user=alice .*outcome=started duration_s=", hub.log_text())
    finally:
        stop_all(hub, "alice")


def test_the_culler_stops_an_idle_session_and_keeps_one_in_use(site):
    """The site's default culler (timeout shortened in the site file) against two sessions."""
    hub = site.hub
    site.set_clock(T0)
    start_session(hub, "alice", hours=4)
    start_session(hub, "bob", hours=4)
    try:
        deadline = time.monotonic() + 3 * CULL_TIMEOUT + 30
        culled = False
        while time.monotonic() < deadline:
            r = hub.server_api("bob", "GET", "/contents")  # bob works: API traffic through the proxy
            assert r.status_code == 200, r.text[:200]
            if not hub.api("GET", "/users/alice").json().get("servers"):
                culled = True
                break
            time.sleep(2)
        assert culled, f"alice's idle session was not culled:\n{hub.log_text()[-3000:]}"
        assert hub.api("GET", "/users/bob").json()["servers"].get(""), "bob's session in use was culled"
        assert "daas-idle-culler" in hub.log_text()
        last = record_of(site, "alice")[-1]
        assert last.state == "ended"
    finally:
        stop_all(hub, "alice")
        stop_all(hub, "bob")
