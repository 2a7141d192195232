"""OpenID Connect login, end to end: a real provider, a real hub, a real browser.

Two instances of the npm package ``oidc-provider`` (an OpenID Certified
implementation) play UmbrellaID and the facility's SSO on ``localhost``; the hub
runs on ``127.0.0.1`` so their cookies stay apart. Debian's headless Chromium,
driven by Playwright, clicks through the login page, the provider's form and the
conditions of use into JupyterLab. The hub runs like a production site: not in
demo mode, auth_state encrypted with JUPYTERHUB_CRYPT_KEY.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import pytest
import requests
import yaml

from conftest import BIN, REPO, free_port, make_world_dir, start_hub, stop_process, wait_until

pytestmark = [pytest.mark.hub, pytest.mark.browser]

LAB_TIMEOUT = 120_000  # ms
REFRESH_AGE = 3  # s
CONDITIONS_VERSION = "2026-11"

UMBRELLA_ACCOUNTS = {
    "alice": {"sub": "umbrella-alice-0001",
              "claims": {"email": "alice@demo.invalid", "email_verified": True, "preferred_username": "alice"}},
    "bob": {"sub": "umbrella-bob-0002",
            "claims": {"email": "bob@demo.invalid", "email_verified": True, "preferred_username": "bob"}},
    # an UmbrellaID anyone could make, choosing the username of the facility's admin
    "mallory": {"sub": "umbrella-mallory-6666",
                "claims": {"email": "mallory@elsewhere.invalid", "preferred_username": "dave", "name": "dave"}},
}
FACILITY_ACCOUNTS = {
    "dave": {"sub": "f-0004", "claims": {"preferred_username": "dave", "groups": ["facility-staff"]}},
    "erin": {"sub": "f-0005", "claims": {"preferred_username": "erin", "groups": ["users"]}},
}


def node_modules() -> Path:
    """The node packages `make` installed (beside configurable-http-proxy)."""
    chp = Path(shutil.which("configurable-http-proxy", path=str(BIN)) or BIN / "configurable-http-proxy")
    modules = next((d for d in chp.resolve().parents if d.name == "node_modules"), chp.parent)
    if not (modules / "oidc-provider").is_dir():
        pytest.fail(f"the npm package oidc-provider is not installed in {modules}; `make test` installs it")
    return modules


class Provider:
    def __init__(self, name: str, accounts: dict, hub_url: str, workdir: Path):
        self.name = name
        self.port = free_port()
        self.issuer = f"http://localhost:{self.port}"
        self.secret = secrets.token_hex(16)
        self.subjects = {login: a["sub"] for login, a in accounts.items()}
        conf = {
            "issuer": self.issuer, "port": self.port, "cookie_prefix": name,
            "accounts": {a["sub"]: {"claims": a["claims"]} for a in accounts.values()},
            "clients": [{
                "client_id": f"daas-hub-{name}", "client_secret": self.secret,
                "redirect_uris": [f"{hub_url}/hub/{name}/oauth_callback"],
                "post_logout_redirect_uris": [f"{hub_url}/hub/login"],
            }],
        }
        (workdir / f"{name}.json").write_text(json.dumps(conf))
        (workdir / f"{name}.secret").write_text(self.secret)
        self.log = workdir / f"provider-{name}.log"
        self.workdir = workdir
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["node", str(self.workdir / "provider.mjs"), str(self.workdir / f"{self.name}.json")],
            cwd=self.workdir, stdout=self.log.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_until(self._ready, timeout=30, what=f"OpenID provider {self.name}")

    @contextlib.contextmanager
    def down(self):
        """The provider stopped for the duration, then started again on the same port, so
        the module's other tests find it whatever order they run in."""
        stop_process(self.proc)
        try:
            yield
        finally:
            self.start()

    def _ready(self):
        if self.proc.poll() is not None:
            pytest.fail(f"provider {self.name} exited:\n{self.log.read_text()[-2000:]}")
        return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).ok


@contextlib.contextmanager
def oidc_hub_running(demo_site: Path, output_dir: Path, *, bin_dir: Path = BIN, tag: str = "oidc"):
    """Two providers, and a production-like hub (not demo, crypt key set) using them."""
    workdir = Path(tempfile.mkdtemp(prefix="daas-oidc-"))
    (workdir / "node_modules").symlink_to(node_modules())
    shutil.copy(REPO / "tests/oidc/provider.mjs", workdir / "provider.mjs")
    hub_port = free_port()
    hub_url = f"http://127.0.0.1:{hub_port}"
    providers = []
    hub = None
    try:
        providers.append(Provider("umbrella", UMBRELLA_ACCOUNTS, hub_url, workdir))
        providers.append(Provider("facility", FACILITY_ACCOUNTS, hub_url, workdir))
        down_port = free_port()  # nothing listens there: a provider that is down
        (workdir / "conditions.txt").write_text(
            "You use this service for the analysis of data from your proposals only.\n\n"
            "Do not share your session with anyone.\n"
        )
        data_dir = demo_site / f"hub-{tag}-{hub_port}"
        data_dir.mkdir(mode=0o700)
        homes = demo_site / f"homes-{tag}-{hub_port}"  # JupyterLab keeps its layout in the home
        homes.mkdir()
        homes.chmod(0o755)
        settings = {
            "facility": {"name": "DEMO Light Source", "contact": "the DEMO User Office (useroffice@demo.invalid)",
                         "data_portal_url": "https://data.demo.invalid"},
            "proposal_source": {"kind": "yaml", "path": str(demo_site / "proposals.yaml")},
            "profiles": {"enabled": ["python", "diffraction", "spectroscopy"]},
            "login": {
                "kind": "oidc",
                "refresh_age": REFRESH_AGE,
                "conditions_of_use": {"version": CONDITIONS_VERSION, "file": str(workdir / "conditions.txt")},
                "providers": [
                    {"name": "umbrella", "label": "UmbrellaID", "issuer": providers[0].issuer,
                     "client_id": "daas-hub-umbrella", "client_secret_file": str(workdir / "umbrella.secret"),
                     "link_by": "umbrella_id", "scopes": ["openid", "profile", "email"]},
                    {"name": "facility", "label": "your facility account", "issuer": providers[1].issuer,
                     "client_id": "daas-hub-facility", "client_secret_file": str(workdir / "facility.secret"),
                     "link_by": "username", "scopes": ["openid", "profile", "groups"],
                     "role_groups": {"staff": ["facility-staff"]}},
                    {"name": "down", "label": "a provider that is down", "issuer": f"http://localhost:{down_port}",
                     "client_id": "daas-hub-down", "link_by": "username"},
                ],
            },
            "spawner": {"backend": "local",
                        "local": {"run_as": "daas-demo", "home_root": str(homes)}},
            "hub": {"url": hub_url, "data_dir": str(data_dir)},
        }
        settings_file = workdir / "site-oidc.yaml"
        settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
        hub = start_hub(demo_site, settings=settings_file, port=hub_port, bin_dir=bin_dir,
                        env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)})
        hub.providers = {p.name: p for p in providers}
        hub.data_dir = data_dir
        yield hub
    finally:
        if hub is not None:
            for user in hub.api("GET", "/users").json():
                if user.get("servers"):
                    hub.api("DELETE", f"/users/{user['name']}/server")
            stop_process(hub.proc, timeout=60)
            shutil.copy(hub.log, output_dir / f"hub-{tag}.log")
        for p in providers:
            stop_process(p.proc)
            shutil.copy(p.log, output_dir / f"{tag}-{p.log.name}")
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def oidc_site():
    """This module's own demo facility: its tests change the proposals file, which
    no other module's hub may see."""
    from daas_hub.demo import ensure_demo_site

    folder = make_world_dir("daas-hub-oidc-site-")
    ensure_demo_site(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def oidc_hub(oidc_site, output_dir):
    with oidc_hub_running(oidc_site, output_dir) as hub:
        yield hub


def sign_in_without_browser(hub, provider: str, login: str) -> requests.Response:
    """The same login with plain HTTP: hub -> provider form (POST) -> back at the hub."""
    s = requests.Session()
    r = s.get(f"{hub.url}/hub/{provider}/oauth_login", timeout=30)
    assert r.url.startswith(hub.providers[provider].issuer + "/interaction/"), r.url
    action = re.search(r'<form autocomplete="off" action="([^"]+)"', r.text).group(1)
    r = s.post(urljoin(r.url, action), timeout=60, data={
        "prompt": "login", "login": hub.providers[provider].subjects[login], "password": "any password"})
    r.session = s
    return r


def sign_in(page, hub, provider: str, login: str):
    """Hub login page -> 'Sign in with ...' -> the provider's form -> back at the hub."""
    page.goto(f"{hub.url}/hub/login")
    page.click(f"#daas-login-{provider}")
    page.wait_for_selector("input[name=login]", timeout=30_000)
    assert page.url.startswith(hub.providers[provider].issuer)
    page.fill("input[name=login]", hub.providers[provider].subjects[login])
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(hub.url) + r"/.*"), timeout=60_000)
    page.wait_for_load_state("load")


def text_of(page) -> str:
    return re.sub(r"\s+", " ", page.inner_text("body"))


def signed_in(context, hub) -> bool:
    """Does the browser hold a hub session? (/hub/home answers, not the login page)"""
    r = context.request.get(f"{hub.url}/hub/home", max_redirects=0)
    return r.status == 200


def dir_listing(page) -> set[str]:
    page.wait_for_selector(".jp-DirListing-item", timeout=30_000)
    return set(page.locator(".jp-DirListing-item .jp-DirListing-itemText").all_inner_texts())


def test_umbrella_user_accepts_conditions_then_lands_in_lab(oidc_hub, browser, output_dir):
    hub = oidc_hub
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    outside = []
    allowed = (hub.url, hub.providers["umbrella"].issuer, "data:", "blob:")

    def record(req):
        # the hub's pages (not the test provider's development login form) load nothing from outside
        frame_url = req.frame.url if req.frame else ""
        if frame_url.startswith(hub.url) and not req.url.startswith(allowed):
            outside.append(req.url)

    page.on("request", record)
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1|localhost).*"), lambda route: route.abort())
    try:
        page.goto(f"{hub.url}/hub/login")
        assert page.locator("#daas-login-umbrella").inner_text().strip() == "Sign in with UmbrellaID"
        assert page.locator("#daas-login-facility").inner_text().strip() == "Sign in with your facility account"
        page.screenshot(path=output_dir / "oidc-01-login.png")

        sign_in(page, hub, "umbrella", "alice")
        # first login: the conditions of use come before any session
        assert "/hub/conditions" in page.url, page.url
        assert "Conditions of use" in text_of(page) and CONDITIONS_VERSION in text_of(page)
        assert hub.api("GET", "/users/alice").json()["servers"] == {}
        page.screenshot(path=output_dir / "oidc-02-conditions.png")

        # the spawn guard: no session without acceptance, even by going to /hub/spawn directly
        page.goto(f"{hub.url}/hub/spawn")
        assert "accept the conditions of use" in text_of(page)
        assert not hub.api("GET", "/users/alice").json()["servers"]
        r = hub.api("POST", "/users/alice/server")  # nor through the REST API
        assert r.status_code == 403 and "conditions of use" in r.json()["message"], r.text
        assert not hub.api("GET", "/users/alice").json()["servers"]

        page.goto(f"{hub.url}/hub/conditions")
        page.click("#daas-conditions-accept")
        page.wait_for_selector("#daas-options", timeout=60_000)  # the spawn form, prefilled: one click
        page.click("#spawn_form button[type=submit]")
        page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=LAB_TIMEOUT)
        page.wait_for_selector('.jp-DirListing-itemText >> text="proposals"', timeout=LAB_TIMEOUT)
        page.locator('.jp-DirListing-itemText >> text="proposals"').first.dblclick(timeout=60_000)
        page.wait_for_selector(".jp-DirListing-item >> text=MX-1001", timeout=60_000)
        assert dir_listing(page) == {"MX-1001", "HC-3003", "IH-5005"}
        page.screenshot(path=output_dir / "oidc-03-lab.png")

        model = hub.api("GET", "/users/alice").json()
        assert set(model["groups"]) == {"proposal-MX-1001", "proposal-HC-3003", "proposal-IH-5005"}
        assert model["admin"] is False

        # auth_state is encrypted at rest: no proposal id, subject or token in clear in the database
        db = sqlite3.connect(hub.data_dir / "jupyterhub.sqlite")
        try:
            (blob,) = db.execute("select encrypted_auth_state from users where name = 'alice'").fetchone()
            dump = "\n".join(db.iterdump())
        finally:
            db.close()
        assert blob, "alice has auth_state"
        for secret in (b"IH-5005", b"umbrella-alice-0001", b"daas_conditions", b"access_token"):
            assert secret not in blob
        assert "IH-5005" not in dump.replace("proposal-IH-5005", "")  # only the group name is in clear

        # logout ends the hub session and the provider's (RP-initiated logout)
        hub.stop_server("alice")
        page.goto(f"{hub.url}/hub/logout")
        page.wait_for_url(re.compile(re.escape(hub.providers["umbrella"].issuer) + r"/session/end.*"),
                          timeout=30_000)
        page.click("button[autofocus], button[type=submit]")
        page.wait_for_url(re.compile(re.escape(hub.url) + r"/hub/login.*"), timeout=30_000)
        assert not signed_in(context, hub)

        # signing in again asks for the password again (provider session ended), and the
        # recorded acceptance survived the new login: no conditions page this time
        page.goto(f"{hub.url}/hub/login?next=/hub/home")
        page.click("#daas-login-umbrella")
        page.wait_for_selector("input[name=login]", timeout=30_000)
        page.fill("input[name=login]", "umbrella-alice-0001")
        page.fill("input[name=password]", "any password")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(re.escape(hub.url) + r"/hub/home.*"), timeout=60_000)
        assert "/conditions" not in page.url
    except BaseException:
        page.screenshot(path=output_dir / "oidc-failure.png")
        raise
    finally:
        context.close()
        hub.stop_server("alice")
    assert not outside, f"pages loaded something from outside the machine: {outside[:5]}"


@pytest.mark.parametrize(
    ("provider", "login", "says"),
    [
        # an UmbrellaID that claims the admin's username is not linked to any account
        ("umbrella", "mallory", "is not linked to an account at DEMO Light Source"),
        # a facility account on no proposal, not staff
        ("facility", "erin", "not on any proposal at DEMO Light Source"),
    ],
)
def test_refused_people_get_a_clear_page_and_no_session(oidc_hub, browser, provider, login, says):
    hub = oidc_hub
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in(page, hub, provider, login)
        text = text_of(page)
        assert says in text
        assert "DEMO User Office" in text
        assert "Traceback" not in text
        assert not signed_in(context, hub)
    finally:
        context.close()
    names = {u["name"] for u in hub.api("GET", "/users").json()}
    assert login not in names and "umbrella-mallory-6666" not in names
    if login == "mallory":
        dave = hub.api("GET", "/users/dave")
        assert dave.status_code == 404 or not dave.json().get("servers"), "no session for the impersonated account"


def test_staff_through_the_facility_provider(oidc_hub, browser):
    hub = oidc_hub
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in(page, hub, "facility", "dave")
        assert "/hub/conditions" in page.url
        page.click("#daas-conditions-accept")
        page.wait_for_selector("#daas-options", timeout=60_000)  # the spawn form, prefilled: one click
        page.click("#spawn_form button[type=submit]")
        hub.wait_ready("dave")
        r = hub.server_api("dave", "GET", "/contents/proposals")
        assert {c["name"] for c in r.json()["content"]} == {"MX-1001", "IH-5005"}
        assert hub.api("GET", "/users/dave").json()["admin"] is True
    finally:
        context.close()
        hub.stop_server("dave")


def test_proposal_granted_appears_after_refresh_age(oidc_hub, browser, oidc_site):
    """Bob is added to a proposal while signed in; it shows after the refresh age, no new login."""
    hub = oidc_hub
    path = oidc_site / "proposals.yaml"
    original = path.read_text()
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in(page, hub, "umbrella", "bob")
        assert set(hub.api("GET", "/users/bob").json()["groups"]) == {"proposal-MX-1001", "proposal-EC-2002"}
        doc = yaml.safe_load(original)
        doc["proposals"].append({
            "id": "NEW-7007", "title": "Granted this morning", "instrument": "ID21",
            "members": [{"username": "bob", "role": "member"}], "data": {"raw": "data/id21/EC-2002/raw"},
        })
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 2))

        def refreshed():
            page.goto(f"{hub.url}/hub/home")  # an authenticated hub request triggers refresh_user
            return "proposal-NEW-7007" in hub.api("GET", "/users/bob").json()["groups"]

        wait_until(refreshed, timeout=REFRESH_AGE * 10, interval=1, what="bob's new proposal group")
        assert signed_in(context, hub), "still signed in: no new login was needed"
    finally:
        path.write_text(original)
        os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 4))
        context.close()


def test_forged_state_gives_a_clear_page_and_no_session(oidc_hub, browser):
    hub = oidc_hub
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{hub.url}/hub/login")
        page.click("#daas-login-umbrella")
        page.wait_for_selector("input[name=login]", timeout=30_000)
        forged = urlencode({"code": "made-up", "state": "eyJzdGF0ZV9pZCI6ICJmb3JnZWQifQ=="})
        page.goto(f"{hub.url}/hub/umbrella/oauth_callback?{forged}")
        text = text_of(page)
        assert "This sign-in response cannot be used" in text
        assert "Traceback" not in text
        assert not signed_in(context, hub)
    finally:
        context.close()


def test_replayed_code_gives_a_clear_page_and_no_session(oidc_hub, browser):
    hub = oidc_hub
    callbacks = []
    first = browser.new_context()
    page = first.new_page()
    page.on("request", lambda req: callbacks.append(req.url) if "/oauth_callback?" in req.url else None)
    try:
        sign_in(page, hub, "umbrella", "bob")
        assert callbacks
    finally:
        first.close()
    used_code = parse_qs(urlparse(callbacks[0]).query)["code"][0]

    second = browser.new_context()
    page = second.new_page()
    try:
        # a fresh sign-in in another browser, whose valid state carries the stolen, used code
        authorize = []
        issuer = hub.providers["umbrella"].issuer
        page.on("request", lambda req: authorize.append(req.url) if req.url.startswith(issuer + "/auth?") else None)
        page.goto(f"{hub.url}/hub/login")
        page.click("#daas-login-umbrella")
        page.wait_for_selector("input[name=login]", timeout=30_000)
        state = parse_qs(urlparse(authorize[0]).query)["state"]
        page.goto(f"{hub.url}/hub/umbrella/oauth_callback?" + urlencode({"code": used_code, "state": state[0]}))
        text = text_of(page)
        assert "refused to complete this sign-in" in text
        assert "Traceback" not in text
        assert not signed_in(second, hub)
    finally:
        second.close()


def test_provider_down_gives_a_clear_page_and_no_session(oidc_hub, browser):
    """A provider that never answered, and one the hub has used before (its discovery
    document is cached) stopped for the test and started again after it."""
    hub = oidc_hub
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{hub.url}/hub/login")
        page.click("#daas-login-down")
        page.wait_for_load_state("load")
        text = text_of(page)
        assert "a provider that is down is not answering right now" in text
        assert "Traceback" not in text
        # the page's title is the status in words; the address and the socket error stay in the log
        assert page.locator("h1").inner_text().strip() == "503 : Service Unavailable"
        assert "Errno" not in text and "well-known" not in text
        assert "Connection refused" in hub.log_text() or "Errno" in hub.log_text()
        assert not signed_in(context, hub)

        with hub.providers["facility"].down():
            page.goto(f"{hub.url}/hub/login")
            page.click("#daas-login-facility")
            page.wait_for_load_state("load")
            text = text_of(page)
            assert "your facility account is not answering right now" in text
            assert page.url.startswith(hub.url)
            assert not signed_in(context, hub)
    finally:
        context.close()
