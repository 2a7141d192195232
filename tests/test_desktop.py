"""Desktops in the browser, end to end: real hub, real Xvnc, noVNC in headless Chromium.

A JupyterHub + configurable-http-proxy serves its own demo site; sessions run as
the unprivileged demo account and start Debian's TigerVNC (Xtigervnc) with
openbox. Windows are read back from the X server itself with ``xwininfo``.
Facility VMs (the hub's VM gateway, a real guacd) are tested in tests/test_vm_gateway.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import BIN, canvas_colours, make_world_dir, start_hub, stop_process, wait_until

pytestmark = [pytest.mark.hub, pytest.mark.browser]

LAB_TIMEOUT = 120_000
ACTIVITY_INTERVAL = 5  # s: the hub pulls proxy activity, sessions report theirs, this often

needs_vnc = pytest.mark.skipif(not shutil.which("vncserver"), reason="TigerVNC is not installed (make test installs it)")


@pytest.fixture(scope="module")
def desktop_hub():
    """A hub of its own (short activity intervals)."""
    from daas_hub.demo import ensure_demo_site

    site = make_world_dir("daas-hub-desk-")
    ensure_demo_site(site)
    hub = start_hub(site, extra_args=[
        f"--JupyterHub.last_activity_interval={ACTIVITY_INTERVAL}",
        f"--LocalSpawner.environment=JUPYTERHUB_ACTIVITY_INTERVAL={ACTIVITY_INTERVAL}",
    ])
    yield hub
    for user in hub.api("GET", "/users").json():
        if user.get("servers"):
            hub.api("DELETE", f"/users/{user['name']}/server")
    time.sleep(2)
    stop_process(hub.proc, timeout=60)
    out = Path(__file__).resolve().parent.parent / "test-output"
    out.mkdir(exist_ok=True)
    shutil.copy(hub.log, out / "desktop-hub.log")
    shutil.rmtree(site, ignore_errors=True)


# -- helpers --------------------------------------------------------------------------------

def session_processes(home: Path) -> list[dict]:
    """Processes whose HOME is ``home`` (the session's), read from /proc."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"HOME={home}".encode() not in env:
                continue
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        found.append({"pid": int(pid), "cmd": [c.decode(errors="replace") for c in cmd if c]})
    return found


def xservers(home: Path) -> list[dict]:
    return [p for p in session_processes(home) if Path(p["cmd"][0]).name in ("Xtigervnc", "Xvnc")]


def window_names(display: str, home: Path) -> list[str]:
    out = subprocess.run(["xwininfo", "-root", "-tree"], capture_output=True, text=True, timeout=20,
                         env={"DISPLAY": display, "XAUTHORITY": str(home / ".Xauthority"), "PATH": "/usr/bin:/bin"})
    return re.findall(r'^\s+0x[0-9a-f]+ "([^"]*)"', out.stdout, re.M)


def wait_for_picture(page, timeout: float = 60):
    page.wait_for_selector("#screen canvas", timeout=timeout * 1000)
    wait_until(lambda: page.locator("#status").inner_text() == "Connected", timeout=timeout, what="noVNC connected")
    return wait_until(lambda: canvas_colours(page) > 1, timeout=timeout, what="a picture that is not blank")


def start_through_form(hub, user):
    """Sign in and press Start on the prefilled spawn form; the signed-in session."""
    r = hub.login(user)
    assert r.status_code == 302, r.text[:300]
    session = r.session
    r = hub.submit_form(session, user)
    assert r.status_code == 200, r.text[:500]
    hub.wait_ready(user)
    return session


def browser_login(browser, hub, user):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.click(f"#daas-login-{user}")
    page.wait_for_selector("#daas-options", timeout=60_000)  # the spawn form, prefilled: one click
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url(re.compile(rf".*/user/{user}/lab.*"), timeout=LAB_TIMEOUT)
    return context, page


def home_of(hub, user) -> Path:
    return hub.site / "homes" / user


# -- the desktop and application desktops ----------------------------------------------------

@needs_vnc
def test_desktop_and_application_desktop_through_the_hub(desktop_hub, browser, output_dir):
    hub = desktop_hub
    outside = []
    context, page = browser_login(browser, hub, "alice")
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((hub.url, "data:", "blob:")) else None)
    home = home_of(hub, "alice")
    try:
        # the launcher shows the desktop and the application tiles
        page.wait_for_selector(".jp-LauncherCard", timeout=LAB_TIMEOUT)
        titles = {t.strip().splitlines()[-1].replace("[↗]", "").strip()
                  for t in page.locator(".jp-LauncherCard").all_inner_texts()}
        assert {"Desktop", "PyMca", "silx view", "pyFAI-calib2", "Terminal"} <= titles, titles
        page.screenshot(path=output_dir / "desktop-01-launcher.png")

        page.goto(f"{hub.url}/user/alice/desktop/")
        wait_for_picture(page)
        (xvnc,) = xservers(home)
        display = xvnc["cmd"][1]
        names = wait_until(lambda: (n := window_names(display, home)) and any("proposals" in x for x in n)
                           and any("xterm" in x for x in n) and n, timeout=60, what="xterm and the file manager")
        assert any(x.endswith("proposals") for x in names), names
        page.wait_for_timeout(1000)
        page.screenshot(path=output_dir / "desktop-02-desktop.png")
        check_clipboard_both_ways(page, display, home)

        # a second, application desktop at the same time, its own X server
        app = context.new_page()
        app.on("request", lambda r: outside.append(r.url) if not r.url.startswith((hub.url, "data:", "blob:")) else None)
        app.goto(f"{hub.url}/user/alice/apps/silx-view/desktop/")
        wait_for_picture(app, timeout=90)
        servers = wait_until(lambda: len(s := xservers(home)) == 2 and s, timeout=30, what="two X servers")
        (app_display,) = [s["cmd"][1] for s in servers if s["cmd"][1] != display]
        wait_until(lambda: any("silx" in x.lower() for x in window_names(app_display, home)),
                   timeout=120, what="the silx view window")
        app.wait_for_timeout(2000)
        app.screenshot(path=output_dir / "desktop-03-silx-view.png")
        assert canvas_colours(page) > 1, "the first desktop is still shown"

        # Xvnc listens on no TCP port: none in its sockets, nothing answers on the usual ports
        for s in servers:
            assert "-rfbunixpath" in s["cmd"] and "-nolisten" in s["cmd"]
            # the unix socket sits in a folder only the session's account can enter
            folder = Path(s["cmd"][s["cmd"].index("-rfbunixpath") + 1]).parent
            assert folder.stat().st_mode & 0o077 == 0 and folder.stat().st_uid == os.stat(home).st_uid
            assert not tcp_listeners(s["pid"]), f"Xvnc {s['pid']} listens on TCP"
            n = int(s["cmd"][1].lstrip(":"))
            for port in (5900 + n, 6000 + n):
                with socket.socket() as sock:
                    sock.settimeout(2)
                    assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something answers on TCP {port}"
        pids = [p["pid"] for p in session_processes(home)]
    finally:
        context.close()
        hub.stop_server("alice")
    # no Xvnc, openbox or application survives the stop
    wait_until(lambda: not [p for p in pids if Path(f"/proc/{p}").exists()], timeout=30,
               what="every session process gone")
    assert not outside, f"pages loaded something from outside the session: {outside[:5]}"


def check_clipboard_both_ways(page, display: str, home: Path) -> None:
    """The viewer's clipboard panel and the desktop's X clipboard, read back with xclip."""
    env = {"DISPLAY": display, "XAUTHORITY": str(home / ".Xauthority"), "PATH": "/usr/bin:/bin"}
    # browser -> desktop
    page.evaluate("""(text) => { const t = document.getElementById('clipboard-text');
        t.value = text; t.dispatchEvent(new Event('change')); }""", "from the browser 42")

    def remote_clipboard():
        out = subprocess.run(["xclip", "-selection", "clipboard", "-o"], env=env, capture_output=True,
                             text=True, timeout=10)
        return out.stdout == "from the browser 42"

    wait_until(remote_clipboard, timeout=20, what="the browser's text on the desktop's clipboard")
    # desktop -> browser: a program on the desktop owns the clipboard (xclip, in the foreground)
    owner = subprocess.Popen(["xclip", "-quiet", "-selection", "clipboard", "-i"], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        owner.stdin.write(b"from the desktop 7")
        owner.stdin.close()
        wait_until(lambda: page.evaluate("document.getElementById('clipboard-text').value") == "from the desktop 7",
                   timeout=20, what="the desktop's text in the viewer's clipboard panel")
    finally:
        stop_process(owner, timeout=5)


def tcp_listeners(pid: int) -> list[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                found.append(fields[1])
    return found


@needs_vnc
def test_only_the_owner_gets_the_desktop(desktop_hub):
    hub = desktop_hub
    bob = start_through_form(hub, "bob")
    try:
        # another signed-in user is refused (alice's server need not even run)
        start_through_form(hub, "alice")
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        for path in ("desktop/", "apps/pymca/desktop/"):
            r = bob.get(f"{hub.url}/user/alice/{path}", timeout=60)
            assert r.status_code == 403, (path, r.status_code, r.url)
        for path in ("desktop-websockify/", "apps/pymca/desktop-websockify/"):
            r = bob.get(f"{hub.url}/user/alice/{path}", headers=upgrade, timeout=60)
            assert r.status_code == 403, (path, r.status_code, r.url)
        # the owner gets it
        r = bob.get(f"{hub.url}/user/bob/apps/pymca/desktop/", timeout=60)
        assert r.status_code == 200 and "desktop/static/dist/viewer.js" in r.text
        # anonymous: sent to the login page
        r = requests.get(f"{hub.url}/user/alice/desktop/", timeout=60)
        assert r.url.startswith(f"{hub.url}/hub/login"), r.url
        for path in ("desktop-websockify/",):
            r = requests.get(f"{hub.url}/user/alice/{path}", timeout=60, headers=upgrade, allow_redirects=False)
            assert r.status_code in (302, 403), (path, r.status_code)
            assert r.status_code == 403 or "/hub/" in r.headers["location"]
    finally:
        hub.stop_server("bob")
        hub.stop_server("alice")


# -- activity: an idle desktop tab lets the culler stop the session --------------------------

@needs_vnc
def test_idle_desktop_tab_is_culled_input_keeps_it(desktop_hub, browser, output_dir):
    """The real jupyterhub-idle-culler against the real hub, with short intervals.

    While the mouse moves on the desktop the session stays; once it stops, the
    open (idle) desktop tab does not keep the culler from stopping the session.
    """
    hub = desktop_hub
    timeout = 20
    context, page = browser_login(browser, hub, "carol")
    culler = None
    log = hub.site / "culler.log"
    try:
        page.goto(f"{hub.url}/user/carol/desktop/")  # leave JupyterLab: only the desktop is open
        wait_for_picture(page)
        culler = subprocess.Popen(
            [str(BIN / "jupyterhub-idle-culler"), f"--url={hub.url}/hub/api", f"--timeout={timeout}",
             "--cull-every=5"],
            env={**os.environ, "JUPYTERHUB_API_TOKEN": hub.token}, stdout=log.open("w"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        canvas = page.locator("#screen canvas")
        box = canvas.bounding_box()
        end = time.monotonic() + 2 * timeout
        i = 0
        while time.monotonic() < end:  # a person at the mouse
            page.mouse.move(box["x"] + 100 + 5 * (i % 40), box["y"] + 100 + 3 * (i % 30))
            i += 1
            page.wait_for_timeout(1000)
        model = hub.api("GET", "/users/carol").json()
        assert model["servers"].get(""), f"culled while in use: {log.read_text()[-2000:]}"
        started_idle = time.monotonic()

        def culled():
            m = hub.api("GET", "/users/carol").json()
            return not m.get("servers") and not m.get("pending")

        wait_until(culled, timeout=3 * timeout + 60, interval=2, what="the idle session culled")
        idle_for = time.monotonic() - started_idle
        assert "Culling server carol" in log.read_text() or "carol" in log.read_text()
        print(f"idle desktop tab: session culled {idle_for:.0f} s after the last input (timeout {timeout} s)")
    finally:
        if culler:
            stop_process(culler)
        context.close()
        m = hub.api("GET", "/users/carol").json()
        if m.get("servers"):
            hub.stop_server("carol")


# -- desktops end with their server, however it ends ------------------------------------------

def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@needs_vnc
def test_sigkilled_server_takes_its_desktops_along_and_the_next_start_works(desktop_hub, browser, output_dir):
    """SIGKILL the session's server (a crash, an OOM kill) with two desktops open.

    The desktops run under the guard (daas_hub.proxies.lifetime): the kernel's
    parent-death signal ends each desktop's process group at once, before the hub
    polls the server. No notebook is opened, so the session's only processes are
    the server and its desktops.
    """
    hub = desktop_hub
    user = "dave"  # staff: a session without choosing a proposal
    context, page = browser_login(browser, hub, user)
    home = home_of(hub, user)
    try:
        page.goto(f"{hub.url}/user/{user}/desktop/")
        wait_for_picture(page)
        app = context.new_page()
        app.goto(f"{hub.url}/user/{user}/apps/terminal/desktop/")
        wait_for_picture(app, timeout=90)
        servers = wait_until(lambda: len(s := xservers(home)) == 2 and s, timeout=30, what="two X servers")
        procs = session_processes(home)
        # the session server: daas-hub-singleuser (jupyterhub-singleuser with a cheaper start)
        (server,) = [p for p in procs if any(c.endswith("-singleuser") for c in p["cmd"])]
        assert len(procs) >= 6, procs  # server, two guards, two vncservers, two Xvnc, openbox, ...
        os.kill(server["pid"], signal.SIGKILL)
        pids = [p["pid"] for p in procs]
        # the killed server stays a zombie until the hub (its parent) polls it: dead, holding nothing
        wait_until(lambda: not [p for p in pids if running(p)], timeout=15,
                   what=f"every process of the session gone: {[p for p in procs if running(p['pid'])]}")
        assert not [p for p in session_processes(home) if running(p["pid"])], session_processes(home)
        assert not [s for s in servers if Path(f"/proc/{s['pid']}").exists()]
    finally:
        context.close()
    # the hub sees the server gone at its next poll; then the next start works
    wait_until(lambda: not hub.api("GET", f"/users/{user}").json()["servers"].get("", {}).get("ready"),
               timeout=120, interval=2, what="the hub noticing the server is gone")
    hub.stop_server(user)
    start_through_form(hub, user)
    try:
        r = hub.server_api(user, "GET", "/status")
        assert r.status_code == 200
    finally:
        hub.stop_server(user)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
