"""Fixtures that start real servers: a JupyterHub with configurable-http-proxy,
the demo site behind it, and headless Chromium.

Servers listen on loopback only, on free ports, are waited for with bounded
loops and stopped by their own PIDs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUTPUT = REPO / "test-output"


def pytest_collection_modifyitems(config, items):
    """``DAAS_TEST_SHUFFLE=<seed>``: run the collected tests in a seeded random order (the
    unit tests' order check in ``make test``; the seed is printed to repeat a failure)."""
    seed = os.environ.get("DAAS_TEST_SHUFFLE")
    if seed:
        import random

        random.Random(seed).shuffle(items)
        print(f"daas-hub: tests shuffled with DAAS_TEST_SHUFFLE={seed}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, *, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Call ``check`` until it returns something truthy; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout} s (last error: {last_error!r})")


def stop_process(proc: subprocess.Popen, *, timeout: float = 20) -> None:
    """SIGTERM the process (and its own process group), then SIGKILL; by PID only."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


def make_world_dir(prefix: str) -> Path:
    """A folder session accounts can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    return path


class Hub:
    """A running JupyterHub, and helpers to talk to it as a person or as an admin."""

    def __init__(self, url: str, token: str, site: Path, proc: subprocess.Popen, log: Path):
        self.url = url.rstrip("/")
        self.token = token
        self.site = site
        self.proc = proc
        self.log = log

    # -- admin side: a test service with admin scopes
    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kwargs)

    def server_api(self, user: str, method: str, path: str, **kwargs) -> requests.Response:
        """Call the user's own single-user server through the proxy."""
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/user/{user}/api{path}", headers=headers, timeout=30, **kwargs)

    # -- person side: the demo login form
    def login(self, user: str) -> requests.Response:
        s = requests.Session()
        s.get(f"{self.url}/hub/login", timeout=30)
        r = s.post(f"{self.url}/hub/login", data={"username": user, "_xsrf": s.cookies.get("_xsrf")},
                   timeout=60, allow_redirects=False)
        r.session = s
        return r

    def signed_in(self, user: str) -> requests.Session:
        """A browser session of ``user``, signed in through the demo login form."""
        r = self.login(user)
        assert r.status_code == 302, r.text[:300]
        return r.session

    def progress(self, user: str, *, until: str, timeout: float = 120) -> list[dict]:
        """The hub's progress events for ``user`` until one's message contains ``until`` (or one failed)."""
        events = []
        deadline = time.monotonic() + timeout
        with requests.get(f"{self.url}/hub/api/users/{user}/server/progress", stream=True, timeout=timeout,
                          headers={"Authorization": f"token {self.token}"}) as r:
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if until in events[-1].get("message", "") or events[-1].get("failed"):
                        break
                if time.monotonic() > deadline:
                    break
        return events

    def stop_all_servers(self) -> None:
        """Stop every server of every user (a module's hub, before it stops)."""
        for user in self.api("GET", "/users").json():
            for name in list(user.get("servers", {})):
                self.stop_server(user["name"], server=name)

    def spawn_form(self, session: requests.Session, user: str, server: str = "") -> dict:
        """GET the spawn form and read its prefilled values, as a browser would send them."""
        r = session.get(f"{self.url}/hub/spawn/{user}/{server}" if server else f"{self.url}/hub/spawn", timeout=60)
        assert r.status_code == 200 and 'id="daas-options"' in r.text, r.text[:1000]
        return form_values(r.text)

    def submit_form(self, session: requests.Session, user: str, server: str = "", **overrides) -> requests.Response:
        """Submit the spawn form with its prefilled values, changed by ``overrides``."""
        values = {**self.spawn_form(session, user, server), **{k: str(v) for k, v in overrides.items()}}
        url = f"{self.url}/hub/spawn/{user}/{server}" if server else f"{self.url}/hub/spawn"
        return session.post(url, data={**values, "_xsrf": session.cookies.get("_xsrf")}, timeout=60)

    def wait_ready(self, user: str, timeout: float = 120, server: str = "") -> dict:
        def ready():
            model = self.api("GET", f"/users/{user}").json()
            server_model = model.get("servers", {}).get(server)
            if server_model and server_model.get("ready"):
                return model
            if not model.get("pending") and not server_model and server == "":
                raise RuntimeError(f"{user}'s server is neither pending nor running")
            return None

        return wait_until(ready, timeout=timeout, interval=0.5, what=f"{user}'s server {server!r} ready")

    def stop_server(self, user: str, timeout: float = 60, server: str = "") -> None:
        r = self.api("DELETE", f"/users/{user}/servers/{server}" if server else f"/users/{user}/server")
        assert r.status_code in (202, 204, 400, 404), r.text

        def stopped():
            model = self.api("GET", f"/users/{user}").json()
            if server:
                return server not in model.get("servers", {})
            return "" not in model.get("servers", {}) and not model.get("pending")

        wait_until(stopped, timeout=timeout, interval=0.5, what=f"{user}'s server stopped")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def form_values(html: str) -> dict:
    """The values a browser would submit from the daas options form (selected options, inputs)."""
    values = {}
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', html, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*\bselected\b', body) or re.search(r'<option value="([^"]*)"', body)
        if chosen:
            values[name] = chosen.group(1)
    for tag in re.findall(r"<input[^>]*>", html):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name and value and name.group(1) != "_xsrf":
            values[name.group(1)] = value.group(1)
    return values


TEST_CONFIG = """\
# The real jupyterhub_config.py, plus a test service with admin scopes and free ports.
import os
load_subconfig({config!r})
c.JupyterHub.hub_bind_url = {hub_bind!r}
c.ConfigurableHTTPProxy.api_url = {proxy_api!r}
# appended: the site's own services (the idle culler) stay
c.JupyterHub.services.append({{"name": "daas-tests", "api_token": os.environ["DAAS_TEST_TOKEN"]}})
c.JupyterHub.load_roles.append({{
    "name": "daas-tests",
    "scopes": ["admin:users", "admin:servers", "access:servers", "admin:groups", "read:users"],
    "services": ["daas-tests"],
}})
{extra}
"""


def start_demo_hub(prefix: str, *, extensions_off: tuple[str, ...] = ()) -> tuple[Hub, Path]:
    """A hub on a fresh demo site (local backend); ``extensions_off``: server extensions switched
    off in its sessions, through the sessions' own Jupyter config folder (benchmarks compare a
    daas-hub lever with JupyterHub's behaviour this way)."""
    from daas_hub.demo import ensure_demo_site

    site = make_world_dir(prefix)
    ensure_demo_site(site)
    extra = ""
    if extensions_off:
        config_dir = site / "session-jupyter-config"
        config_dir.mkdir(mode=0o755)
        off = {"ServerApp": {"jpserver_extensions": {name: False for name in extensions_off}}}
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(off))
        (config_dir / "jupyter_server_config.json").chmod(0o644)
        extra = f"c.Spawner.environment = {{'JUPYTER_CONFIG_DIR': {str(config_dir)!r}}}\n"
    try:
        return start_hub(site, extra_config=extra), site
    except BaseException:
        shutil.rmtree(site, ignore_errors=True)
        raise


def start_hub(site: Path, *, settings: Path | None = None, extra_args=(), wait: bool = True, bin_dir: Path = BIN,
              port: int | None = None, env: dict | None = None, extra_config: str = ""):
    """Start ``jupyterhub -f jupyterhub_config.py`` for the site and wait for it.

    ``port``: listen there (default: a free one); ``env``: extra environment;
    ``extra_config``: lines appended to the test's config file.
    """
    from daas_hub.settings import load_settings

    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(16)
    settings = settings or site / "site.yaml"
    cfg = site / "test_jupyterhub_config.py"
    cfg.write_text(TEST_CONFIG.format(
        config=str(REPO / "jupyterhub_config.py"),
        hub_bind=f"http://127.0.0.1:{free_port()}",
        proxy_api=f"http://127.0.0.1:{free_port()}",
        extra=extra_config,
    ))
    extra_env = env
    env = dict(os.environ)
    env.update({
        "DAAS_HUB_SETTINGS": str(settings),
        "DAAS_TEST_TOKEN": token,
        "PATH": os.pathsep.join([str(bin_dir), str(BIN), env.get("PATH", "")]),
    })
    env.pop("JUPYTERHUB_CRYPT_KEY", None)
    env.update(extra_env or {})
    data_dir = Path(load_settings(settings).data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = site / f"hub-{port}.log"
    proc = subprocess.Popen(
        [str(bin_dir / "jupyterhub"), "-f", str(cfg), f"--JupyterHub.bind_url={url}", *extra_args],
        cwd=data_dir, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    hub = Hub(url, token, site, proc, log)
    def healthy():
        if proc.poll() is not None:
            pytest.fail(f"the hub exited with {proc.returncode}:\n{hub.log_text()[-3000:]}")
        return requests.get(f"{url}/hub/health", timeout=2).ok

    if wait:
        try:
            wait_until(healthy, timeout=60, what="hub /hub/health")
        except BaseException:
            stop_process(proc)
            raise
    return hub


@pytest.fixture(scope="session")
def demo_site():
    """The demo facility generated in a fresh folder (sample users, proposals, HDF5 data)."""
    from daas_hub.demo import ensure_demo_site

    folder = make_world_dir("daas-hub-site-")
    ensure_demo_site(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fresh_demo_site():
    """A demo facility of the test's own (for a test that changes the site or stops its hub)."""
    from daas_hub.demo import ensure_demo_site

    folder = make_world_dir("daas-hub-fresh-")
    ensure_demo_site(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def hub(demo_site):
    """A real JupyterHub + configurable-http-proxy serving the demo site."""
    h = start_hub(demo_site)
    yield h
    for user in h.api("GET", "/users").json():
        if user.get("servers"):
            h.api("DELETE", f"/users/{user['name']}/server")
    stop_process(h.proc, timeout=60)
    OUTPUT.mkdir(exist_ok=True)
    shutil.copy(h.log, OUTPUT / "hub.log")


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium, driven by Playwright (no browser download).

    Module-scoped: while Playwright's sync API is active it keeps an asyncio loop
    running in the main thread, and every later ``asyncio.run`` (pytest-asyncio
    tests included) would fail with "cannot be called from a running event loop".
    """
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is not installed; `make test` installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


def canvas_colours(page) -> int:
    """Distinct colours on the noVNC (or Guacamole) canvas, sampled."""
    return page.evaluate("""() => {
        let best = 0;
        for (const c of document.querySelectorAll('canvas')) {
            if (!c.width || !c.height) continue;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const seen = new Set();
            for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i+1] << 8) | d[i+2]);
            best = Math.max(best, seen.size);
        }
        return best;
    }""")
