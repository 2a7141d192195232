"""The daas-hub server extension of the session: desktops, application desktops, VM bridge.

Enabled by ``etc/jupyter/jupyter_server_config.d/daas_hub_proxies.json`` (installed
with the package). At link time it adds the desktop entries to
``c.ServerProxy.servers`` (so jupyter-server-proxy supervises them and shows their
launcher tiles, and our ``desktop-websockify`` wins over
jupyter-remote-desktop-proxy's entry point of the same name); at load time it
serves jupyter-remote-desktop-proxy's viewer for each application desktop and the
Guacamole page and tunnel (:mod:`daas_hub.proxies.guacamole`).
"""

from __future__ import annotations

import asyncio
import html
import os
import shutil
import subprocess
import sys
from pathlib import Path

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web, websocket
from traitlets import Bool, Float, Unicode, default, observe
from traitlets.config import Configurable

from . import guacamole as guac
from .apps import APP_LIST_ENV, load_app_list, plan_desktops
from .desktop import DesktopServerProcess, _record_input_activity


class DesktopApps(Configurable):
    """Which desktops the session offers."""

    apps_file = Unicode(
        config=True,
        help="""The application list: one desktop per application (YAML, docs/desktops.md).

        Default: ``$DAAS_HUB_DESKTOP_APPS`` if set, else the list shipped with
        daas-hub (PyMca, silx view, pyFAI-calib2, a terminal). Applications whose
        executable is not on the session's PATH are not offered; the session log
        says why.
        Example: ``"/etc/daas-hub/desktop-apps.yaml"``
        """,
    )

    @default("apps_file")
    def _default_apps_file(self):
        return os.environ.get(APP_LIST_ENV, "")

    catalogue = Unicode(config=True, help="""Deprecated name of ``apps_file`` (daas-hub 0.1).""")

    @observe("catalogue")
    def _deprecated_catalogue(self, change):
        self.log.warning("DesktopApps.catalogue is deprecated since daas-hub 0.2: use DesktopApps.apps_file")
        self.apps_file = change.new

    full_desktop = Bool(
        True, config=True,
        help="""Offer the full desktop (openbox, a terminal, a file manager on the proposals folder).""",
    )

    proposals_folder = Unicode(
        "proposals", config=True,
        help="""The folder (relative to the home) desktops open in: the session's proposals folder.""",
    )


class GuacamoleBridge(Configurable):
    """The bridge to guacd for the facility's virtual machines."""

    client_js = Unicode(
        config=True,
        help="""guacamole-common-js (its CommonJS build, ``guacamole-common.js``) served to the VM page.

        Default: ``<sys.prefix>/share/daas-hub/guacamole-common-js/guacamole-common.js``,
        where ``make project`` copies it from the npm package.
        """,
    )

    @default("client_js")
    def _default_client_js(self):
        return str(Path(sys.prefix) / "share/daas-hub/guacamole-common-js/guacamole-common.js")

    connect_timeout = Float(
        5, config=True, help="""Seconds to wait for guacd to accept a connection (the page says the VM
        desktop is unavailable after that).""",
    )


_QT = ("PyQt5", "PyQt6", "PySide6", "PySide2")


class GuiWhich:
    """``shutil.which`` for graphical programs: skips Python scripts whose interpreter has no Qt.

    A session's Jupyter environment often carries the Python package of an
    application (pyFAI, silx) without a Qt binding, ahead of the system's working
    one on PATH. Each candidate on PATH is tried in order; the reasons for the ones
    passed over are kept for the log.
    """

    def __init__(self, path: str | None = None):
        self.path = path if path is not None else os.environ.get("PATH", os.defpath)
        self.passed_over: dict[str, list[str]] = {}
        self._qt: dict[str, bool] = {}

    def __call__(self, name: str) -> str | None:
        seen = set()
        for folder in self.path.split(os.pathsep):
            candidate = shutil.which(name, path=folder) if folder else None
            if not candidate or os.path.realpath(candidate) in seen:
                continue
            seen.add(os.path.realpath(candidate))
            interpreter = _python_shebang(candidate)
            if interpreter and not self._has_qt(interpreter):
                self.passed_over.setdefault(name, []).append(
                    f"{candidate} (its Python {interpreter} has no Qt binding: {', '.join(_QT)})")
                continue
            return candidate
        return None

    def _has_qt(self, interpreter: str) -> bool:
        if interpreter not in self._qt:
            code = ("import importlib.util as u, sys; "
                    f"sys.exit(0 if any(u.find_spec(m) for m in {_QT!r}) else 1)")
            try:
                ok = subprocess.run([interpreter, "-c", code], timeout=20, capture_output=True).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            self._qt[interpreter] = ok
        return self._qt[interpreter]


def _python_shebang(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env" and len(words) > 1:
        words = [shutil.which(words[1]) or words[1]]
    return words[0] if "python" in Path(words[0]).name else None


def _link_jupyter_server_extension(serverapp):
    log = serverapp.log
    cfg = DesktopApps(parent=serverapp)
    home = os.path.expanduser("~")
    proposals = os.path.join(home, cfg.proposals_folder)
    workdir = proposals if os.path.isdir(proposals) else home
    try:
        apps = load_app_list(cfg.apps_file or None)
    except Exception as e:  # noqa: BLE001 - a bad application list must not stop the session
        log.error("daas-hub: application desktops are not offered: %s", e)
        apps = ()
    which = GuiWhich()
    plan = plan_desktops(apps, proposals_dir=workdir, which=which, full_desktop=cfg.full_desktop)
    for what, why in plan.skipped:
        log.warning("daas-hub: %s not offered: %s", what, why)
    for name, passed in which.passed_over.items():
        log.info("daas-hub: for %s, passed over %s", name, "; ".join(passed))
    if plan.offered:
        log.info("daas-hub: desktops offered: %s", ", ".join(plan.offered))
    servers = dict(serverapp.config.ServerProxy.get("servers", {}))
    for name, entry in plan.servers.items():
        if name in servers:
            log.info("daas-hub: c.ServerProxy.servers[%r] is set by the site; keeping it", name)
            continue
        servers[name] = DesktopServerProcess(name=name, **entry)
    serverapp.config.ServerProxy.servers = servers
    serverapp._daas_desktop_apps = [n for n in plan.offered if n != "desktop"]


def _load_jupyter_server_extension(serverapp):
    from jupyter_remote_desktop_proxy.handlers import DesktopHandler
    from jupyter_server_proxy.handlers import AddSlashHandler

    base = serverapp.web_app.settings["base_url"]
    handlers = []
    for app_id in getattr(serverapp, "_daas_desktop_apps", []):
        viewer = url_path_join(base, "apps", app_id, "desktop")
        handlers += [(viewer, AddSlashHandler), (viewer + "/", DesktopHandler)]

    bridge = GuacamoleBridge(parent=serverapp)
    try:
        targets = guac.parse_targets(os.environ.get(guac.TARGETS_ENV, ""))
        guacd = guac.parse_guacd(os.environ.get(guac.GUACD_ENV, ""))
    except ValueError as e:
        serverapp.log.error("daas-hub: VM desktops are unavailable: %s", e)
        targets, guacd = {}, None
    options = {"targets": targets, "guacd": guacd, "bridge": bridge}
    vm = url_path_join(base, "vm")
    handlers += [
        (vm, AddSlashHandler),
        (vm + "/", VmIndexHandler, options),
        (vm + "/static/guacamole-common.js", GuacamoleJsHandler, options),
        (vm + r"/([a-z0-9][a-z0-9-]*)", AddSlashHandler),
        (vm + r"/([a-z0-9][a-z0-9-]*)/", VmPageHandler, options),
        (vm + r"/([a-z0-9][a-z0-9-]*)/tunnel", GuacTunnelHandler, options),
    ]
    serverapp.web_app.add_handlers(".*", handlers)
    if targets and not guacd:
        serverapp.log.warning("daas-hub: %d VM target(s) but no guacd (%s unset): VM desktops are unavailable",
                              len(targets), guac.GUACD_ENV)


# -- the VM pages -------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
 body {{ margin: 0; font-family: sans-serif; background: #333; color: #eee; }}
 #bar {{ padding: 4px 8px; background: #222; font-size: 14px; }}
 #display {{ outline: none; }}
 a {{ color: #9cf; }}
 .message {{ padding: 2em; font-size: 16px; }}
</style></head>
<body>{body}</body></html>
"""


class _VmHandler(JupyterHandler):
    def initialize(self, targets, guacd, bridge):
        self.targets = targets
        self.guacd = guacd
        self.bridge = bridge

    async def guacd_reachable(self) -> bool:
        if not self.guacd:
            return False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*self.guacd), self.bridge.connect_timeout)
        except (TimeoutError, OSError):
            return False
        writer.close()
        return True

    def page(self, title: str, body: str) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(_PAGE.format(title=html.escape(title), body=body))

    def unavailable(self, why: str) -> None:
        self.set_status(503)
        self.page("VM desktop unavailable", f'<p class="message" id="vm-unavailable">The VM desktop is unavailable: '
                  f'{html.escape(why)}</p>')


class VmIndexHandler(_VmHandler):
    @web.authenticated
    async def get(self):
        if not self.targets:
            return self.page("Facility VMs", '<p class="message" id="vm-none">No facility virtual machine is '
                             'open to you (they are given by your proposals and roles).</p>')
        if not await self.guacd_reachable():
            return self.unavailable("the remote desktop gateway (guacd) is not running for this session. "
                                    "Contact the facility's support.")
        items = "".join(f'<li><a href="{html.escape(t.id)}/">{html.escape(t.title)}</a> ({t.protocol})</li>'
                        for t in self.targets.values())
        self.page("Facility VMs", f'<div class="message"><p>Facility virtual machines:</p><ul>{items}</ul></div>')


class GuacamoleJsHandler(_VmHandler):
    @web.authenticated
    def get(self):
        try:
            text = Path(self.bridge.client_js).read_bytes()
        except OSError:
            raise web.HTTPError(404, "guacamole-common-js is not installed in this session") from None
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.finish(text)


_CLIENT = """<div id="bar"><span id="vm-title">{title}</span> &middot; <span id="vm-status">Connecting...</span>
 &middot; <a href="../">all machines</a></div>
<div id="display" tabindex="0"></div>
<script>var module = {{}};  /* the CommonJS build's last line assigns module.exports */</script>
<script src="../static/guacamole-common.js"></script>
<script>
const status = document.getElementById("vm-status");
const tunnel = new Guacamole.WebSocketTunnel("tunnel");
const client = new Guacamole.Client(tunnel);
const display = document.getElementById("display");
display.appendChild(client.getDisplay().getElement());
client.onstatechange = (s) => {{
  status.textContent = ["Idle", "Connecting...", "Waiting...", "Connected", "Disconnecting", "Disconnected"][s];
  document.body.dataset.state = s;
}};
client.onerror = (e) => {{ status.textContent = "Error: " + e.message; document.body.dataset.error = e.code; }};
const w = Math.max(window.innerWidth, 64), h = Math.max(window.innerHeight - 30, 64);
client.connect("width=" + w + "&height=" + h + "&dpi=" + Math.round(96 * (window.devicePixelRatio || 1)));
const mouse = new Guacamole.Mouse(client.getDisplay().getElement());
mouse.onEach(["mousedown", "mouseup", "mousemove"], (e) => client.sendMouseState(e.state, true));
const keyboard = new Guacamole.Keyboard(display);
keyboard.onkeydown = (k) => client.sendKeyEvent(1, k);
keyboard.onkeyup = (k) => client.sendKeyEvent(0, k);
window.addEventListener("resize", () => client.sendSize(window.innerWidth, window.innerHeight - 30));
window.addEventListener("beforeunload", () => client.disconnect());
window.daasClient = client;
</script>"""


class VmPageHandler(_VmHandler):
    @web.authenticated
    async def get(self, target_id):
        target = self.targets.get(target_id)
        if target is None:
            raise web.HTTPError(404, f"no VM {target_id!r} is open to you")
        if not await self.guacd_reachable():
            return self.unavailable("the remote desktop gateway (guacd) is not running for this session. "
                                    "Contact the facility's support.")
        self.page(target.title, _CLIENT.format(title=html.escape(target.title)))


class GuacTunnelHandler(_VmHandler, websocket.WebSocketHandler):
    """guacamole-common-js's WebSocketTunnel, relayed to guacd after our own handshake."""

    _guacd_writer = None

    def select_subprotocol(self, subprotocols):
        return "guacamole" if "guacamole" in subprotocols else None

    async def get(self, target_id):
        if not self.current_user:
            raise web.HTTPError(403, "sign in to the hub to open a VM desktop")
        target = self.targets.get(target_id)
        if target is None:  # refused before any connection is attempted
            self.log.warning("daas-hub: refused VM target %r: not in this user's allow-list", target_id)
            raise web.HTTPError(403, f"no VM {target_id!r} is open to you")
        if not self.guacd:
            raise web.HTTPError(503, "the VM desktop is unavailable: no guacd for this session")
        self._target = target
        await websocket.WebSocketHandler.get(self, target_id)

    async def open(self, target_id):
        size = guac.client_size({k: self.get_query_argument(k, "") for k in ("width", "height", "dpi")})
        self._parser = guac.InstructionParser()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.guacd),
                                                    self.bridge.connect_timeout)
            self._guacd_writer = writer
            conn_id, gparser, pending = await guac.guacd_handshake(reader, writer, self._target, size)
        except (TimeoutError, OSError, guac.ProtocolError) as e:
            self.log.warning("daas-hub: VM %s: %s", self._target.id, e)
            self.write_message(guac.encode("error", "The VM desktop is unavailable.", "519"))
            self.close(1011, "519")
            return
        self.log.info("daas-hub: VM %s connected (guacd connection %s)", self._target.id, conn_id)
        self.write_message(guac.encode(guac.INTERNAL_OPCODE, guac.new_tunnel_id()))
        if pending:
            self.write_message("".join(guac.encode(op, *args) for op, args in pending))
        self._relay = asyncio.ensure_future(self._from_guacd(reader, gparser))

    async def _from_guacd(self, reader, parser):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                _, text = parser.feed_raw(parser.decoder.decode(data))
                if text:
                    await self.write_message(text)
        except (websocket.WebSocketClosedError, guac.ProtocolError, OSError) as e:
            self.log.info("daas-hub: VM %s relay ended: %s", self._target.id, e)
        finally:
            self.close()

    def on_message(self, message):
        if self._guacd_writer is None:
            return
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        try:
            instructions, _ = self._parser.feed_raw(message)
        except guac.ProtocolError:
            self.close(1002, "bad instruction")
            return
        out = []
        for opcode, args in instructions:
            if opcode == guac.INTERNAL_OPCODE:
                if args[:1] == ["ping"]:
                    self.write_message(guac.encode(guac.INTERNAL_OPCODE, *args))
                continue
            if opcode in guac.HANDSHAKE_OPCODES and opcode != "size":
                continue  # only the bridge chooses the target and its parameters
            if opcode in guac.INPUT_OPCODES:
                _record_input_activity(self)
            out.append(guac.encode(opcode, *args))
        if out:
            self._guacd_writer.write("".join(out).encode())

    def on_close(self):
        if self._guacd_writer is not None:
            self._guacd_writer.close()
        relay = getattr(self, "_relay", None)
        if relay:
            relay.cancel()


def _jupyter_server_extension_points():
    return [{"module": "daas_hub.proxies.extension"}]

