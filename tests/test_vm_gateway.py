"""Facility VMs through the hub's VM gateway, end to end, on a real guacd and real targets.

A JupyterHub + configurable-http-proxy with the demo site and the VM gateway service
(its own account ``daas-vmgw``); guacd 1.6.0 built by ``make guacd`` runs as
``daas-guacd`` behind the owner-match firewall rule; the targets are Debian's
Xtigervnc, xrdp and openssh-server on loopback (tests/vm_targets.py). Pages are opened
in Debian's headless Chromium. The hostile checks run as the session's account
(``daas-demo``, with the running session's own environment read from /proc): the
same account and variables a terminal or kernel of that session has.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import requests
import yaml
from vm_targets import (
    GATEWAY_ACCOUNT,
    SSH_ACCOUNT,
    Guacd,
    Servers,
    SshTarget,
    VncTarget,
    XrdpTarget,
    as_account,
    ensure_account,
)

from conftest import canvas_colours, free_port, make_world_dir, start_hub, stop_process, wait_until

pytestmark = [pytest.mark.hub, pytest.mark.browser]
needs_guacd = pytest.mark.skipif(not Path("/var/cache/daas-hub/guacd-1.6.0/sbin/guacd").exists(),
                                 reason="guacd is not built (make guacd)")
SESSION_ACCOUNT = "daas-demo"


@pytest.fixture(scope="module")
def vm(output_dir):
    """guacd, the three targets, and a hub with the VM gateway."""
    from daas_hub.demo import ensure_demo_site

    site = make_world_dir("daas-hub-vm-")
    ensure_demo_site(site)
    gw = ensure_account(GATEWAY_ACCOUNT)
    servers = Servers(site)
    world = {"site": site, "servers": servers}
    try:
        guacd = Guacd(servers, gw.pw_uid)
        vnc = VncTarget(servers, site)
        rdp = XrdpTarget(servers, site, vnc)
        ssh = SshTarget(servers, site)
        guacd.guard()
        etc = site / "vm"
        etc.mkdir(mode=0o755)
        secrets_dir = etc / "secrets"
        secrets_dir.mkdir(mode=0o700)
        creds = {"vnc-ws": {"password": vnc.password}, "rdp-ws": {"password": "unused"},
                 "ssh-ctl": {"username": SSH_ACCOUNT, "password": ssh.password}}
        for tid, values in creds.items():
            f = secrets_dir / f"{tid}.yaml"
            f.write_text(yaml.safe_dump(values))
            f.chmod(0o600)
            os.chown(f, gw.pw_uid, gw.pw_gid)
        os.chown(secrets_dir, gw.pw_uid, gw.pw_gid)
        targets = {"targets": [
            {"id": "vnc-ws", "title": "ID11 VNC workstation", "protocol": "vnc",
             "parameters": {"hostname": "127.0.0.1", "port": vnc.port}, "credentials": "secrets/vnc-ws.yaml",
             "allow": {"instruments": ["ID11"]}},
            {"id": "rdp-ws", "title": "ID11 RDP workstation", "protocol": "rdp",
             "parameters": {"hostname": "127.0.0.1", "port": rdp.port, "security": "tls", "ignore-cert": True,
                            "username": "na"},
             "credentials": "secrets/rdp-ws.yaml", "allow": {"instruments": ["ID11"]}},
            {"id": "ssh-ctl", "title": "Control host (SSH)", "protocol": "ssh",
             "parameters": {"hostname": "127.0.0.1", "port": ssh.port, "font-size": 14},
             "credentials": "secrets/ssh-ctl.yaml", "allow": {"proposals": ["MX-1001"], "proposal_roles": ["pi"]}},
            {"id": "control", "title": "Beamline control", "protocol": "ssh",
             "parameters": {"hostname": "ctl.demo.invalid"}, "allow": {"roles": ["staff"]}},
        ]}
        (etc / "vm-targets.yaml").write_text(yaml.safe_dump(targets))
        logs = etc / "log"
        logs.mkdir(mode=0o700)
        os.chown(logs, gw.pw_uid, gw.pw_gid)
        recordings = etc / "recordings"
        recordings.mkdir(mode=0o700)
        os.chown(recordings, guacd.account.pw_uid, guacd.account.pw_gid)
        config = etc / "vm_gateway_config.py"
        config.write_text(f"""c.VmGateway.targets_file = {str(etc / 'vm-targets.yaml')!r}
c.VmGateway.guacd_address = "127.0.0.1:{guacd.port}"
c.VmGateway.audit_log = {str(logs / 'vm-connections.jsonl')!r}
c.VmGateway.recording_dir = {str(recordings)!r}
c.VmGateway.recheck_seconds = 1
""")
        gw_port = free_port()
        # proposals re-read at every hub request a second apart: the ended-proposal test changes the source
        hub = start_hub(site, extra_config=(
            "c.DemoAuthenticator.auth_refresh_age = 1\n"
            "from daas_hub.vmgateway import configure_vm_gateway\n"
            f"configure_vm_gateway(c, config_file={str(config)!r}, port={gw_port})\n"))
        world["gw_url"] = f"http://127.0.0.1:{gw_port}"
        world.update(hub=hub, guacd=guacd, vnc=vnc, rdp=rdp, ssh=ssh, etc=etc, secrets=secrets_dir,
                     audit=logs / "vm-connections.jsonl", recordings=recordings, gw=gw)
        wait_until(lambda: requests.get(f"{hub.url}/services/vm/", allow_redirects=False, timeout=5).status_code
                   in (302, 303), timeout=60, what="the VM gateway answering")
        yield world
    finally:
        hub = world.get("hub")
        if hub:
            for user in hub.api("GET", "/users").json():
                if user.get("servers"):
                    hub.api("DELETE", f"/users/{user['name']}/server")
            time.sleep(2)
            stop_process(hub.proc, timeout=60)
            shutil.copy(hub.log, output_dir / "vm-hub.log")
        if "guacd" in world:
            world["guacd"].unguard()
        servers.stop()
        for name in ("guacd", "xrdp", "xrdp-own", "sshd"):
            if (site / f"{name}.log").exists():
                shutil.copy(site / f"{name}.log", output_dir / f"vm-{name}.log")
        shutil.rmtree(site, ignore_errors=True)


def start_session(hub, user):
    r = hub.login(user)
    assert r.status_code == 302, r.text[:300]
    r2 = hub.submit_form(r.session, user)
    assert r2.status_code == 200, r2.text[:300]
    hub.wait_ready(user)
    return r.session


def browser_page(browser, hub, session):
    # Playwright evaluates its checks as strings, which the page's Content-Security-Policy forbids
    context = browser.new_context(viewport={"width": 1100, "height": 800}, bypass_csp=True)
    for c in session.cookies:
        context.add_cookies([{"name": c.name, "value": c.value, "url": hub.url}])
    return context, context.new_page()


def session_pid(home: Path) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"HOME={home}".encode() in env and (b"jupyterhub-singleuser" in cmd or b"daas-hub-singleuser" in cmd):
            return int(pid)
    raise LookupError(f"no session server with HOME={home}")


def session_env(pid: int) -> dict:
    items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


# -- real targets in Chromium -----------------------------------------------------------------

@needs_guacd
@pytest.mark.parametrize("target", [
    "vnc-ws",
    "rdp-ws",
    "ssh-ctl",
])
def test_open_a_vm_from_the_session_with_pixels_and_keys(vm, browser, output_dir, target):
    hub = vm["hub"]
    session = start_session(hub, "alice")
    context, page = browser_page(browser, hub, session)
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((hub.url, "ws://127.0.0.1",
                                                                                  "data:", "blob:")) else None)
    bodies = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: bodies.append(str(f))))
    marker = f"typed-{target}-{int(time.time())}"
    try:
        # the session's launcher tile for the gateway, with its icon
        r = session.get(f"{hub.url}/user/alice/server-proxy/servers-info", timeout=30)
        tiles = {s["name"]: s for s in r.json()["server_processes"]}
        assert tiles["vm"]["launcher_entry"]["title"] == "Facility VMs" and tiles["vm"]["launcher_entry"]["icon_url"]
        assert tiles["apps/pymca/desktop-websockify"]["launcher_entry"].get("icon_url")
        # <server>/vm/ leads to the gateway, which signs the browser in with the hub's OAuth
        page.goto(f"{hub.url}/user/alice/vm/")
        page.wait_for_url(re.compile(r".*/services/vm/$"), timeout=60_000)
        titles = page.locator("li a").all_inner_texts()
        assert titles == ["ID11 VNC workstation", "ID11 RDP workstation", "Control host (SSH)"], titles
        page.click(f"a[href='{target}/']")
        try:
            page.wait_for_function("document.body.dataset.state === '3'", timeout=60_000)
            wait_until(lambda: canvas_colours(page) > 1, timeout=60, what="the VM picture")
        except Exception:
            page.screenshot(path=output_dir / f"vm-{target}-failed.png")
            raise
        page.wait_for_timeout(1500)
        page.mouse.click(300, 200)
        if target == "ssh-ctl":
            check = vm["ssh"].home / marker
            page.keyboard.type(f"echo ok > {check}\n", delay=30)
        else:
            check = vm["site"] / marker
            page.keyboard.type(f"echo ok > {check}\n", delay=30)
        wait_until(check.exists, timeout=30, what=f"the keys typed in the browser reaching {target}")
        page.wait_for_timeout(500)
        page.screenshot(path=output_dir / f"vm-{target}.png")
        joined = "".join(bodies)
        for secret in (vm["vnc"].password, vm["ssh"].password, "127.0.0.1"):
            assert secret not in joined, "a credential or the target's address reached the browser"
    finally:
        context.close()
        hub.stop_server("alice")
    assert not outside, f"loaded from outside the facility: {outside[:5]}"
    # the audit log names the person, the machine, the times and the bytes
    entries = wait_until(lambda: [e for e in map(json.loads, vm["audit"].read_text().splitlines())
                                  if e["event"] == "connection" and e["target"] == target], timeout=20,
                         what="the audit entry")
    last = entries[-1]
    assert last["user"] == "alice" and last["bytes_in"] > 1000 and last["bytes_out"] > 0 and last["seconds"] > 0
    # recording is on: guacd wrote the session under the user's folder
    assert any(f.name.startswith(target) for f in (vm["recordings"] / "alice").iterdir())


# -- what a curious session account can and cannot reach -----------------------------------

@needs_guacd
def test_the_session_account_cannot_reach_guacd_credentials_or_the_gateways_internals(vm):
    hub, guacd = vm["hub"], vm["guacd"]
    start_session(hub, "alice")
    try:
        home = hub.site / "homes" / "alice"
        env = session_env(session_pid(home))
        # the session knows the gateway's name only: no guacd address, no credential, no target host
        assert env["DAAS_HUB_VM_SERVICE"] == "vm"
        text = json.dumps(env)
        assert str(guacd.port) not in text and vm["vnc"].password not in text and vm["ssh"].password not in text
        assert not [k for k in env if "GUACD" in k or "VM_TARGETS" in k]

        # 1. guacd directly, with a select of the session's choosing: the firewall resets the connection
        probe = f"""
import socket
s = socket.create_connection(("127.0.0.1", {guacd.port}), timeout=5)
s.sendall(b"6.select,3.ssh;")
print(s.recv(100))
"""
        done = as_account(SESSION_ACCOUNT, probe)
        assert done.returncode != 0 and "ConnectionRefusedError" in done.stderr, done
        # ... while guacd is up and answers its own gateway's account: the rule is what stops the session
        done = as_account(GATEWAY_ACCOUNT, probe)
        assert done.returncode == 0 and "args" in done.stdout, done

        # 2. the credentials, the gateway's environment (its hub token) and its audit log: unreadable
        gateway_pid = next(p for p in os.listdir("/proc") if p.isdigit() and _cmd(p).count("daas_hub.proxies.gateway"))
        for path in (vm["secrets"] / "vnc-ws.yaml", vm["secrets"], f"/proc/{gateway_pid}/environ", vm["audit"],
                     vm["recordings"]):
            done = as_account(SESSION_ACCOUNT, f"import os, sys; p = {str(path)!r}\n"
                              "print(os.listdir(p) if os.path.isdir(p) else open(p).read())")
            assert done.returncode != 0 and "PermissionError" in done.stderr, (path, done.stdout[:200])

        # 3. the gateway with the session's own hub token, through the proxy and directly: refused
        token = env["JUPYTERHUB_API_TOKEN"]
        gw_url = vm["gw_url"]
        code = f"""
import urllib.request, urllib.error
for url in ({hub.url + '/services/vm/vnc-ws/'!r}, {gw_url + '/services/vm/vnc-ws/'!r}):
    req = urllib.request.Request(url, headers={{"Authorization": "token {token}"}})
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k): return None
    try:
        r = urllib.request.build_opener(NoRedirect).open(req, timeout=20)
        print("OPEN", r.status)
    except urllib.error.HTTPError as e:
        print("REFUSED", e.code)
"""
        done = as_account(SESSION_ACCOUNT, code)
        assert done.stdout.split() == ["REFUSED", "403", "REFUSED", "403"], done
    finally:
        hub.stop_server("alice")


def _cmd(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def tunnel(hub, target, cookies, messages=()):
    """Open the gateway's tunnel with tornado's websocket client as a browser would; (status, frames)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from tornado import httpclient, websocket

    url = f"{hub.url.replace('http', 'ws', 1)}/services/vm/{target}/tunnel?width=800&height=600"
    cookie = "; ".join(f"{c.name}={c.value}" for c in cookies)

    async def go():
        req = httpclient.HTTPRequest(url, headers={"Cookie": cookie, "Origin": hub.url})
        try:
            conn = await websocket.websocket_connect(req, subprotocols=["guacamole"])
        except httpclient.HTTPClientError as e:
            return e.code, []
        frames = [await conn.read_message() for _ in range(2)]
        for m in messages:
            conn.write_message(m)
        conn.write_message("0.,4.ping,2.42;")
        for _ in range(50):
            frame = await conn.read_message()
            frames.append(frame)
            if frame is None or frame.startswith("0.,4.ping"):
                break
        conn.close()
        return 101, frames

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(asyncio.wait_for(go(), 60))).result()


def gateway_cookies(hub, user):
    """Sign in to the hub, then follow the gateway's OAuth dance; the browser's cookies."""
    r = hub.login(user)
    s = r.session
    page = s.get(f"{hub.url}/services/vm/", timeout=60)
    assert page.status_code == 200 and page.url == f"{hub.url}/services/vm/", (page.status_code, page.url)
    return s, page


@needs_guacd
def test_refusals_other_targets_ended_proposals_anonymous_and_handshake_injection(vm):
    hub = vm["hub"]
    audit_before = vm["audit"].read_text() if vm["audit"].exists() else ""
    # bob: on ID11 through MX-1001, but not staff: "control" is not his
    bob, page = gateway_cookies(hub, "bob")
    assert "ID11 VNC workstation" in page.text and "Beamline control" not in page.text
    assert tunnel(hub, "control", bob.cookies)[0] == 403
    assert bob.get(f"{hub.url}/services/vm/control/", timeout=30).status_code == 404
    assert tunnel(hub, "ssh-ctl", bob.cookies)[0] == 403  # PIs only
    # carol: her only ID11 proposal has ended (archived): nothing
    carol, page = gateway_cookies(hub, "carol")
    assert 'id="vm-none"' in page.text
    assert tunnel(hub, "vnc-ws", carol.cookies)[0] == 403
    # anonymous: sent to the hub's login, and the tunnel is refused
    r = requests.get(f"{hub.url}/services/vm/vnc-ws/", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["location"]
    assert tunnel(hub, "vnc-ws", [])[0] == 403
    refused = [json.loads(line) for line in vm["audit"].read_text()[len(audit_before):].splitlines()]
    assert {(e["user"], e["target"]) for e in refused if e["event"] == "refused"} >= {
        ("bob", "control"), ("bob", "ssh-ctl"), ("carol", "vnc-ws")}

    # bob on his own machine, sending select/connect/args of his own through the websocket: dropped
    guacd_log = vm["site"] / "guacd.log"
    offset = len(guacd_log.read_text())
    before = guacd_log.read_text().count("Creating new client for protocol")
    code, frames = tunnel(hub, "vnc-ws", bob.cookies, messages=[
        "6.select,3.ssh;", "7.connect,13.VERSION_1_5_0,9.127.0.0.1,2.22;", "4.args,13.VERSION_1_5_0;"])
    assert code == 101 and frames[0].startswith("0.,36."), frames[:1]
    assert frames[-1] == "0.,4.ping,2.42;"  # the stream went on after the injected instructions
    text = "".join(f for f in frames if f)
    assert vm["vnc"].password not in text
    wait_until(lambda: guacd_log.read_text().count("Creating new client for protocol") == before + 1, timeout=10,
               what="one guacd connection")
    time.sleep(1)
    assert guacd_log.read_text().count("Creating new client for protocol") == before + 1
    new = guacd_log.read_text()[offset:]
    assert 'protocol "vnc"' in new and 'protocol "ssh"' not in new, new[-2000:]


@needs_guacd
def test_a_proposal_ending_during_a_connection_cuts_it_and_refuses_new_ones(vm):
    """erin's only proposal (on ID11) is archived in the proposal source while her VNC
    connection is open: the gateway's re-check (``recheck_seconds=1``; the hub re-reads
    proposals at most every ``auth_refresh_age=1``) cuts the open connection with a
    message, and new connections and the machine list refuse her. Waits are bounded
    waits for those events, not timing assertions. Chromium is not needed: tornado's
    websocket client goes through the hub's proxy as the page's tunnel does.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from tornado import httpclient, websocket

    hub = vm["hub"]
    source = vm["site"] / "proposals.yaml"
    original = source.read_text()
    catalogue = yaml.safe_load(original)
    proposal = {"id": "VM-7007", "title": "VM access test", "instrument": "ID11", "state": "active",
                "members": [{"username": "erin", "role": "member"}],
                "data": {"raw": "data/id11/VM-7007/raw", "processed": "data/id11/VM-7007/processed"}}

    def write_source(state):
        source.write_text(yaml.safe_dump({**catalogue, "proposals": [*catalogue["proposals"],
                                                                     {**proposal, "state": state}]}))

    audit_before = vm["audit"].read_text() if vm["audit"].exists() else ""
    try:
        write_source("active")
        erin, page = gateway_cookies(hub, "erin")
        assert "ID11 VNC workstation" in page.text, page.text[-500:]
        url = f"{hub.url.replace('http', 'ws', 1)}/services/vm/vnc-ws/tunnel?width=800&height=600"
        cookie = "; ".join(f"{c.name}={c.value}" for c in erin.cookies)

        async def connection():
            req = httpclient.HTTPRequest(url, headers={"Cookie": cookie, "Origin": hub.url})
            conn = await websocket.websocket_connect(req, subprotocols=["guacamole"])
            frames = []
            while not any(".img," in f or ".png," in f for f in frames):  # the machine's picture
                frames.append(await asyncio.wait_for(conn.read_message(), 30))
            shown = len(frames)
            write_source("archived")  # the proposal ends while the connection is open
            while True:
                frame = await asyncio.wait_for(conn.read_message(), 60)
                if frame is None:
                    return shown, frames, conn.close_code, conn.close_reason
                frames.append(frame)

        with ThreadPoolExecutor(1) as pool:
            shown, frames, close_code, close_reason = pool.submit(lambda: asyncio.run(connection())).result()
        after = "".join(frames[shown:])
        assert "5.error," in after and "no longer open to you" in after, after[-400:]
        assert (close_code, close_reason) == (1008, "769")

        # a new connection, the machine's page and the list: refused
        assert tunnel(hub, "vnc-ws", erin.cookies)[0] == 403
        assert erin.get(f"{hub.url}/services/vm/vnc-ws/", timeout=30).status_code == 404
        assert 'id="vm-none"' in erin.get(f"{hub.url}/services/vm/", timeout=30).text

        entries = [json.loads(line) for line in vm["audit"].read_text()[len(audit_before):].splitlines()]
        mine = [(e["event"], e["target"]) for e in entries if e["user"] == "erin"]
        assert mine[:3] == [("revoked", "vnc-ws"), ("connection", "vnc-ws"), ("refused", "vnc-ws")], mine
    finally:
        source.write_text(original)
