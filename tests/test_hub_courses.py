"""A training course end to end: a real JupyterHub, real Chromium, 20 real sessions.

The instructor ``ivan`` defines a course with 20 temporary participants and the
existing account ``erin`` on the instructor page, prints the sign-in sheet, a
link signs in once, "start all" brings 20 JupyterLab sessions up on the local
backend (as the demo's unprivileged account, one home each) with the material
pulled by nbgitpuller, the instructor opens one participant's session (shown to
that participant) and cannot open a non-participant's, "stop all" stops them.
After the window the links and the temporary accounts no longer work; after the
grace period the accounts and their homes are gone while erin keeps hers.

The material is a real git repository served by ``git daemon`` on a free
loopback port (``git://127.0.0.1:<port>/material.git``). Time is the hub's
``CourseBook.clock``, pointed at ``course_clock.now`` (a file the test writes),
so the window and the grace period pass without waiting.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import free_port, make_world_dir, start_hub, stop_process, wait_until

pytestmark = [pytest.mark.hub, pytest.mark.browser]

START = datetime(2030, 3, 2, 9, 0, tzinfo=UTC)
END = START + timedelta(hours=8)
GRACE_HOURS = 24
PARTICIPANTS = 20
CLOCK_MODULE = '''
import os
def now():
    with open(os.environ["DAAS_TEST_CLOCK_FILE"]) as f:
        return float(f.read())
'''


@pytest.fixture(scope="module")
def course_hub():
    from daas_hub.demo import ensure_demo_site, write_material_repo

    site = make_world_dir("daas-hub-courses-")
    ensure_demo_site(site)
    # the material, served by git daemon on loopback
    served = site / "git"
    write_material_repo(served / "material.git", {"README.md": "Welcome to the course.\n",
                                                  "exercise.py": "print('hello')\n"})
    (served / "material.git" / "git-daemon-export-ok").touch()
    port = free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}", f"--base-path={served}",
         "--export-all", str(served)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # the hub's clock
    clock_dir = site / "clock"
    clock_dir.mkdir()
    (clock_dir / "course_clock.py").write_text(CLOCK_MODULE)
    clock_file = clock_dir / "now"
    set_clock(clock_file, START - timedelta(minutes=30))
    hub = start_hub(site, env={"PYTHONPATH": str(clock_dir), "DAAS_TEST_CLOCK_FILE": str(clock_file)},
                    extra_args=["--CourseBook.clock=course_clock.now", f"--CourseBook.grace_period={GRACE_HOURS}",
                                "--DemoAuthenticator.auth_refresh_age=2", "--Spawner.http_timeout=300",
                                "--Operations.notice_refresh=2",
                                f"--CourseBook.material_prefixes=git://127.0.0.1:{port}/"])
    hub.clock_file = clock_file
    hub.material_url = f"git://127.0.0.1:{port}/material.git"
    yield hub
    for user in hub.api("GET", "/users").json():
        for name in user.get("servers", {}):
            hub.api("DELETE", f"/users/{user['name']}/servers/{name}" if name else f"/users/{user['name']}/server")
    stop_process(hub.proc, timeout=90)
    stop_process(daemon)
    out = Path(__file__).resolve().parent.parent / "test-output"
    out.mkdir(exist_ok=True)
    shutil.copy(hub.log, out / "hub-courses.log")
    shutil.rmtree(site, ignore_errors=True)


def set_clock(path: Path, when: datetime) -> None:
    path.write_text(str(when.timestamp()))


def browser_login(context, hub, user):
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.click(f"#daas-login-{user}")
    page.wait_for_url(re.compile(r".*/hub/(spawn|home).*"), timeout=60_000)
    return page


def authorize(page) -> None:
    """Confirm JupyterHub's "Authorize access" page, shown before opening another person's session."""
    page.wait_for_url(re.compile(r".*(/hub/api/oauth2/authorize|/user/).*"), timeout=120_000)
    if "/oauth2/authorize" in page.url:
        page.click("button[type=submit]:has-text('Authorize')")


def course_servers(hub, state: str) -> list[str]:
    names = []
    for u in hub.api("GET", "/users?state=active").json():
        s = u.get("servers", {}).get("course-lab20")
        if s and (state == "ready" and s.get("ready") or state == "active"):
            names.append(u["name"])
    return sorted(names)


def test_course_from_instructor_page_to_clean_up(course_hub, browser):
    hub = course_hub
    site = hub.site
    ivan = browser.new_context()
    page = browser_login(ivan, hub, "ivan")
    # 1. the instructor defines the course on the page (a foreign material URL is refused first)
    page.goto(f"{hub.url}/hub/courses")
    page.fill("input[name=id]", "lab20")
    page.fill("input[name=title]", "Diffraction school")
    page.fill("input[name=start]", START.strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=end]", END.strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=participants]", "erin")
    page.fill("input[name=temporary]", str(PARTICIPANTS))
    page.fill("input[name=material_url]", "https://elsewhere.example/material.git")
    page.click("#daas-create-course")
    page.wait_for_load_state()
    assert "material is taken only from" in page.inner_text("#daas-course-error")
    page.fill("input[name=material_url]", hub.material_url)
    page.click("#daas-create-course")
    page.wait_for_url("**/hub/courses/lab20")
    assert page.locator("#daas-participants tbody tr").count() == PARTICIPANTS + 1

    # 2. the printable sheet: 20 one-time links
    page.click("#daas-links")
    page.wait_for_load_state()
    links = {row.get_attribute("data-user"): row.inner_text().split()[-1]
             for row in page.locator("#daas-links-table tr").all()}
    assert len(links) == PARTICIPANTS and all("/hub/course-login?token=" in u for u in links.values())
    state_text = (site / "hub" / "courses" / "state.json").read_text()
    assert not any(u.split("token=")[1] in state_text for u in links.values())

    # 3. a link signs in once
    p1 = browser.new_context()
    first = p1.new_page()
    first.goto(links["lab20-01"])
    first.click("#daas-link-signin")
    first.wait_for_url("**/hub/courses")
    assert "Diffraction school" in first.inner_text("#daas-courses")
    again = browser.new_context().new_page()
    again.goto(links["lab20-01"])
    assert "already used" in again.inner_text("#daas-link-error")

    # 4. start all: 20 temporary participants + erin, within the course quota (21 sessions)
    set_clock(hub.clock_file, START + timedelta(minutes=5))
    page.goto(f"{hub.url}/hub/courses/lab20")
    page.click("#daas-start-all")
    page.wait_for_load_state()
    assert "Starting 21 sessions" in page.inner_text("#daas-course-message")
    wait_until(lambda: len(course_servers(hub, "ready")) == PARTICIPANTS + 1, timeout=900, interval=3,
               what="21 course sessions ready")
    for n in range(1, PARTICIPANTS + 1):
        readme = site / "homes" / f"lab20-{n:02d}" / "course" / "README.md"
        assert readme.read_text() == "Welcome to the course.\n", readme
    assert (site / "homes" / "erin" / "course" / "exercise.py").exists()

    # 5. the instructor opens a participant's session; the participant sees it
    page.goto(f"{hub.url}/hub/courses/lab20")
    page.locator('tr[data-user="lab20-01"] .daas-open').click()
    authorize(page)  # JupyterHub asks the instructor to confirm access to someone else's session
    page.wait_for_url(re.compile(r".*/user/lab20-01/course-lab20/.*"), timeout=120_000)
    r = ivan.request.get(f"{hub.url}/user/lab20-01/course-lab20/api/contents/course")
    assert r.status == 200 and "README.md" in r.text()
    first.goto(f"{hub.url}/hub/courses")
    assert "instructor ivan opened your course session" in first.inner_text(".daas-opened")
    # ... and not one outside the course, nor a participant's session not opened through the page
    page.goto(f"{hub.url}/hub/courses/lab20")
    xsrf = next(c["value"] for c in ivan.cookies() if c["name"] == "_xsrf" and c["path"] == "/hub/")
    r = ivan.request.post(f"{hub.url}/hub/courses/lab20",
                          form={"_xsrf": xsrf, "action": "open", "participant": "alice"})
    assert r.status == 403 and "alice is not a participant of this course" in r.text()
    r = ivan.request.get(f"{hub.url}/user/lab20-02/course-lab20/api/contents")
    assert r.status == 403, r.status  # the hub's OAuth refuses: no share of that session

    # 6. stop all
    page.goto(f"{hub.url}/hub/courses/lab20")
    page.click("#daas-stop-all")
    page.wait_for_load_state()
    wait_until(lambda: course_servers(hub, "active") == [], timeout=300, interval=2, what="course sessions stopped")

    # 7. after the window: links and temporary accounts no longer work
    set_clock(hub.clock_file, END + timedelta(minutes=1))
    later = browser.new_context().new_page()
    later.goto(links["lab20-02"])
    assert "has ended" in later.inner_text("#daas-link-error")
    wait_until(lambda: p1.request.get(f"{hub.url}/hub/api/user", max_redirects=0).status == 403, timeout=30,
               what="the temporary account's session cookie refused")
    r = hub.api("POST", "/users/lab20-03/servers/course-lab20")
    assert r.status_code >= 400 or "course-lab20" not in hub.api("GET", "/users/lab20-03").json()["servers"]
    assert (site / "homes" / "lab20-01").is_dir()  # files stay during the grace period

    # 8. after the grace period: temporary accounts and their files are gone, erin keeps hers
    set_clock(hub.clock_file, END + timedelta(hours=GRACE_HOURS, minutes=1))
    r = hub.api("POST", "/daas/courses/cleanup")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["removed"]) == [f"lab20-{n:02d}" for n in range(1, PARTICIPANTS + 1)]
    assert not any((site / "homes" / f"lab20-{n:02d}").exists() for n in range(1, PARTICIPANTS + 1))
    assert hub.api("GET", "/users/lab20-01").status_code == 404
    assert hub.api("GET", "/users/erin").status_code == 200
    assert (site / "homes" / "erin" / "course" / "exercise.py").exists()
    for c in (ivan, p1):
        c.close()


def test_instructor_edits_a_course(course_hub, browser):
    """The instructor changes a course's title, window, participants and material on its page;
    bad input gets a sentence and leaves the course as it was; nobody else may edit it."""
    hub = course_hub
    ivan = browser.new_context()
    page = browser_login(ivan, hub, "ivan")
    page.goto(f"{hub.url}/hub/courses")
    page.fill("input[name=id]", "edit1")
    page.fill("input[name=title]", "Tomography basics")
    page.fill("input[name=start]", "2031-05-04T09:00")
    page.fill("input[name=end]", "2031-05-04T17:00")
    page.fill("input[name=participants]", "erin")
    page.fill("input[name=temporary]", "2")
    page.fill("input[name=material_url]", "")
    page.click("#daas-create-course")
    page.wait_for_url("**/hub/courses/edit1")
    course_file = hub.site / "hub" / "courses" / "edit1.yaml"
    before = course_file.read_text()
    form = page.locator("#daas-edit-course")
    assert form.locator("input[name=title]").input_value() == "Tomography basics"
    assert form.locator("input[name=start]").input_value() == "2031-05-04T09:00"

    # bad input: a sentence, the form as typed, the course unchanged
    for field, value, said in [
        ("end", "2031-05-03T17:00", "window > end: the window ends before it starts. Give an end after the start."),
        ("participants", "erin zed", "zed is not an account of the facility"),
        ("material_url", "https://elsewhere.example/m.git", "material is taken only from"),
        ("title", "", "title"),
    ]:
        page.goto(f"{hub.url}/hub/courses/edit1")
        form.locator(f"input[name={field}]").fill(value)
        if field == "title":  # the browser would refuse an empty required field: post it as a script would
            xsrf = next(c["value"] for c in ivan.cookies() if c["name"] == "_xsrf" and c["path"] == "/hub/")
            r = ivan.request.post(f"{hub.url}/hub/courses/edit1", form={
                "_xsrf": xsrf, "action": "edit", "title": "", "start": "2031-05-04T09:00",
                "end": "2031-05-04T17:00", "participants": "erin", "material_url": "", "branch": "main"})
            assert r.status == 400 and "The course was not changed: title" in r.text(), r.text()[:500]
            assert "Traceback" not in r.text()
        else:
            page.click("#daas-save-course")
            page.wait_for_load_state()
            error = page.inner_text("#daas-course-error")
            assert error.startswith("The course was not changed: ") and said in error, error
            assert form.locator(f"input[name={field}]").input_value() == value  # kept as typed
        assert course_file.read_text() == before

    # a good edit: every field the form holds
    page.goto(f"{hub.url}/hub/courses/edit1")
    form.locator("input[name=title]").fill("Tomography, day 1")
    form.locator("input[name=start]").fill("2031-05-05T08:30")
    form.locator("input[name=end]").fill("2031-05-05T12:30")
    form.locator("input[name=participants]").fill("carol")
    form.locator("input[name=material_url]").fill(hub.material_url)
    form.locator("input[name=branch]").fill("main")
    page.click("#daas-save-course")
    page.wait_for_load_state()
    message = page.inner_text("#daas-course-message")
    assert "The course was saved." in message and "erin no longer takes part" in message, message
    assert page.inner_text("h1") == "Tomography, day 1"
    rows = [r.get_attribute("data-user") for r in page.locator("#daas-participants tbody tr").all()]
    assert rows == ["carol", "edit1-01", "edit1-02"]  # temporary accounts stay
    import yaml

    saved = yaml.safe_load(course_file.read_text())
    assert saved["title"] == "Tomography, day 1" and saved["participants"] == ["carol"]
    assert saved["window"] == {"start": "2031-05-05T08:30:00+00:00", "end": "2031-05-05T12:30:00+00:00"}
    assert saved["material"] == {"url": hub.material_url, "branch": "main", "folder": "course"}
    assert saved["temporary_accounts"] == 2 and saved["instructors"] == ["ivan"]

    # only its instructors (and admins) edit it
    bob = browser.new_context()
    browser_login(bob, hub, "bob")
    xsrf = next(c["value"] for c in bob.cookies() if c["name"] == "_xsrf" and c["path"] == "/hub/")
    r = bob.request.post(f"{hub.url}/hub/courses/edit1", form={
        "_xsrf": xsrf, "action": "edit", "title": "Mine now", "start": "2031-05-05T08:30",
        "end": "2031-05-05T12:30", "participants": "bob", "material_url": "", "branch": "main"})
    assert r.status == 404 and "no such course you teach" in r.text()
    assert yaml.safe_load(course_file.read_text())["title"] == "Tomography, day 1"
    for c in (ivan, bob):
        c.close()


def test_broadcast_reaches_participants_in_jupyterlab(course_hub, browser):
    """A message the instructor sends to the course appears in the notice bar of a participant's
    JupyterLab (the course session), not only on the hub's Courses page."""
    hub = course_hub
    start = datetime(2032, 1, 10, 9, 0, tzinfo=UTC)
    set_clock(hub.clock_file, start + timedelta(minutes=5))
    ivan = browser.new_context()
    dave = browser.new_context()
    try:
        page = browser_login(ivan, hub, "ivan")
        page.goto(f"{hub.url}/hub/courses")
        page.fill("input[name=id]", "bcast1")
        page.fill("input[name=title]", "Beamline alignment")
        page.fill("input[name=start]", start.strftime("%Y-%m-%dT%H:%M"))
        page.fill("input[name=end]", (start + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M"))
        page.fill("input[name=participants]", "dave")
        page.fill("input[name=temporary]", "0")
        page.fill("input[name=material_url]", "")
        page.click("#daas-create-course")
        page.wait_for_url("**/hub/courses/bcast1")
        page.click("#daas-start-all")
        page.wait_for_load_state()
        wait_until(lambda: hub.api("GET", "/users/dave").json().get("servers", {}).get("course-bcast1", {})
                   .get("ready"), timeout=300, interval=2, what="dave's course session ready")

        dpage = browser_login(dave, hub, "dave")
        dpage.goto(f"{hub.url}/user/dave/course-bcast1/lab")
        dpage.wait_for_selector("#daas-notices", state="attached", timeout=240_000)
        assert dpage.locator(".daas-course-message").count() == 0

        page.goto(f"{hub.url}/hub/courses/bcast1")
        page.fill("#daas-broadcast textarea[name=text]", "Exercise 2 starts now: open align.ipynb")
        page.click("#daas-broadcast button[value=broadcast]")
        page.wait_for_selector("#daas-course-message")
        wait_until(lambda: "Exercise 2 starts now" in " ".join(
            dpage.locator(".daas-course-message").all_inner_texts()), timeout=60, interval=0.5,
            what="the message in dave's JupyterLab")
        shown = dpage.locator(".daas-course-message").first.inner_text()
        assert shown.startswith("Message to the course (") and "ivan): Exercise 2 starts now" in shown, shown
    finally:
        hub.api("DELETE", "/users/dave/servers/course-bcast1")
        wait_until(lambda: "course-bcast1" not in hub.api("GET", "/users/dave").json().get("servers", {}),
                   timeout=120, interval=1, what="dave's course session stopped")
        set_clock(hub.clock_file, START - timedelta(minutes=30))  # where the fixture left it
        for c in (ivan, dave):
            c.close()
