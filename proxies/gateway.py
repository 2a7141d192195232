"""The VM gateway: facility virtual machines in the browser, from outside every session.

A JupyterHub service (``daas-hub-vm-gateway``, registered by
:func:`daas_hub.vmgateway.configure_vm_gateway`), started by the hub as its own
unprivileged account. It

- signs the browser in with the hub's OAuth (HubOAuth): only the person, never a
  session's token or another service, and only for themselves;
- computes the person's machines at each request from their account roles and
  live proposals (``auth_state``; the gateway first has the hub re-read them, on the
  login's ``auth_refresh_age``), with the pure rule :func:`daas_hub.vmtargets.targets_for`;
- re-checks every open connection each ``recheck_seconds`` the same way and cuts it
  when the machine has left the person's list (their proposal ended, a role was
  removed, they were signed out);
- reads each target's credentials from files only its account can read;
- does the guacd handshake itself and relays the Guacamole stream over a
  websocket (``<prefix><target>/tunnel``); the browser may only choose its
  screen size, and handshake instructions it sends later are dropped;
- logs every connection (user, target, start, end, bytes) to its audit log and,
  when the admin turns it on, has guacd record the session.

guacd must be reachable by this account only (docs/desktops.md: a firewall rule by
uid on one host, a NetworkPolicy on Kubernetes).
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import httpclient, ioloop, web, websocket
from traitlets import Float, Integer, Unicode, default, validate
from traitlets.config import Application

from daas_hub.access import read_auth_state
from daas_hub.errors import SettingsError
from daas_hub.vmtargets import (
    VmTarget,
    connection_parameters,
    load_targets,
    read_credentials,
    recording_parameters,
    targets_for,
)

from . import guacamole as guac


class VmGateway(Application):
    """The VM gateway service (its settings: ``/etc/daas-hub/vm_gateway_config.py``)."""

    name = "daas-hub-vm-gateway"
    description = "The daas-hub VM gateway: facility machines through guacd, for the hub's users."

    config_file = Unicode(
        "", config=True,
        help="""A traitlets config file (Python) with the ``c.VmGateway`` settings.

        Example: ``"/etc/daas-hub/vm_gateway_config.py"``
        """,
    )

    targets_file = Unicode(
        "", config=True,
        help="""The facility's machines and who may open each (YAML, docs/desktops.md).
        Read at every request, so changes apply without a restart. Empty: no machine.

        Example: ``"/etc/daas-hub/vm-targets.yaml"``
        """,
    )

    guacd_address = Unicode(
        "127.0.0.1:4822", config=True,
        help="""``host:port`` of guacd. Only this gateway's account may connect to it
        (docs/desktops.md#where-guacd-runs).
        """,
    )

    audit_log = Unicode(
        "", config=True,
        help="""File the gateway appends one JSON line to per VM connection and per
        refusal (user, target, start, end, bytes). Empty: the gateway's own log only.

        Example: ``"/var/log/daas-hub/vm-connections.jsonl"``
        """,
    )

    recording_dir = Unicode(
        "", config=True,
        help="""Record every VM connection (guacd's session recording) under
        ``<recording_dir>/<user>/``. guacd writes the files, so the folder must be
        writable by guacd's account. Empty (the default): no recording.

        Example: ``"/var/lib/daas-hub/vm-recordings"``
        """,
    )

    connect_timeout = Float(
        5, config=True,
        help="""Seconds to wait for guacd to accept a connection and to answer the
        handshake; after that the page says the VM desktop is unavailable.""",
    )

    recheck_seconds = Float(
        30, config=True,
        help="""Seconds between two checks of an open VM connection: the gateway has the
        hub re-read the person's proposals (at most every ``auth_refresh_age`` of the
        login) and cuts the connection, with a message on the page, once the machine is
        no longer theirs (e.g. the proposal that gave it has ended). If the hub does not
        answer, the connection stays open and the next check tries again. Must be > 0.

        Example: ``c.VmGateway.recheck_seconds = 60``

        .. versionadded:: 0.3
        """,
    )

    @validate("recheck_seconds")
    def _positive_recheck(self, proposal):
        if proposal.value <= 0:
            raise ValueError(f"VmGateway.recheck_seconds must be more than 0 seconds, not {proposal.value}")
        return proposal.value

    auth_cache_seconds = Integer(
        5, config=True,
        help="""Seconds the gateway keeps the hub's answer about a browser's token.
        Short, so a person the hub signs out (e.g. whose last proposal ended) is
        refused soon after.""",
    )

    client_js = Unicode(
        config=True,
        help="""guacamole-common-js (its CommonJS build) served to the VM page.

        Default: ``<sys.prefix>/share/daas-hub/guacamole-common-js/guacamole-common.js``,
        where ``make project`` copies it from the npm package.
        """,
    )

    @default("client_js")
    def _default_client_js(self):
        return str(Path(sys.prefix) / "share/daas-hub/guacamole-common-js/guacamole-common.js")

    aliases = {"config": "VmGateway.config_file", "targets": "VmGateway.targets_file",
               "guacd": "VmGateway.guacd_address", "audit-log": "VmGateway.audit_log",
               "recording-dir": "VmGateway.recording_dir", "log-level": "Application.log_level"}

    def initialize(self, argv=None):
        self.parse_command_line(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            self.parse_command_line(argv)  # the command line wins over the file

    def make_app(self) -> web.Application:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/vm/")
        hub_auth = HubOAuth(api_token=os.environ.get("JUPYTERHUB_API_TOKEN", ""),
                            cache_max_age=self.auth_cache_seconds)
        try:
            guacd = guac.parse_guacd(self.guacd_address)
        except ValueError as e:
            self.log.error("VM desktops are unavailable: %s", e)
            guacd = None
        options = {"gateway": self, "guacd": guacd, "audit": AuditLog(self.audit_log, self.log)}
        target = r"([a-z0-9][a-z0-9-]{0,62})"
        handlers = [
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
            (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}),
            (prefix, IndexHandler, options),
            (url_path_join(prefix, "static/guacamole-common.js"), GuacamoleJsHandler, options),
            (url_path_join(prefix, target), AddSlash),
            (url_path_join(prefix, target) + "/", PageHandler, options),
            (url_path_join(prefix, target, "tunnel"), TunnelHandler, options),
        ]
        return web.Application(handlers, hub_auth=hub_auth, cookie_secret=os.urandom(32),
                               xsrf_cookies=False, log_function=_log_request)

    def start(self):
        url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8090"))
        app = self.make_app()
        app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True)
        self.log.info("VM gateway on %s:%s; guacd %s; targets %s; audit log %s; recording %s",
                      url.hostname, url.port, self.guacd_address, self.targets_file or "(none)",
                      self.audit_log or "(off)", self.recording_dir or "(off)")
        ioloop.IOLoop.current().start()


def _log_request(handler):
    # log without query strings (the tunnel's query carries only the screen size, but never log them)
    status = handler.get_status()
    log = handler.log if hasattr(handler, "log") else None
    if log is None:
        return
    request = handler.request
    log.info("%d %s %s (%.1f ms)", status, request.method, request.path, 1000 * request.request_time())


# -- audit -----------------------------------------------------------------------------------

def audit_entry(event: str, *, user: str, target: str, protocol: str = "", start: float | None = None,
                end: float | None = None, bytes_in: int = 0, bytes_out: int = 0, client: str = "",
                detail: str = "") -> dict:
    """One audit record; pure (times are given). ``bytes_in``: from the machine to the browser."""
    entry = {"event": event, "user": user, "target": target}
    if protocol:
        entry["protocol"] = protocol
    if start is not None:
        entry["start"] = _iso(start)
    if end is not None:
        entry["end"] = _iso(end)
        if start is not None:
            entry["seconds"] = round(end - start, 3)
    if event == "connection":
        entry["bytes_in"] = bytes_in
        entry["bytes_out"] = bytes_out
    if client:
        entry["client"] = client
    if detail:
        entry["detail"] = detail
    return entry


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


class AuditLog:
    """Appends JSON lines to the audit file (and always to the gateway's log)."""

    def __init__(self, path: str, log):
        self.path = path
        self.log = log

    def write(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True)
        self.log.info("audit: %s", line)
        if not self.path:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            self.log.error("cannot write the VM audit log %s: %s", self.path, e.strerror)


# -- the pages -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Allowed:
    """The person's machines, or why there are none.

    ``problem`` set: the answer is not known (the hub did not answer, the targets file
    is broken); an open connection is then kept until a check that knows.
    """

    targets: dict
    problem: str = ""


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


class AddSlash(web.RequestHandler):
    def get(self, *args):
        self.redirect(self.request.path + "/")


class _GatewayHandler(HubOAuthenticated, web.RequestHandler):
    def initialize(self, gateway: VmGateway, guacd, audit: AuditLog):
        self.gateway = gateway
        self.guacd = guacd
        self.audit = audit

    @property
    def log(self):
        return self.gateway.log

    def check_hub_user(self, model):
        model = super().check_hub_user(model)
        if model and model.get("kind", "user") != "user":
            self.log.warning("refused %s %s: the VM gateway serves people, not services",
                             model.get("kind"), model.get("name"))
            return None
        return model

    async def allowed(self, token: str | None = None) -> Allowed:
        """The current person's machines, from the hub's ``auth_state`` and the targets file.

        ``token``: the person's own OAuth token (default: the request's). Asking the hub
        whom it belongs to makes the hub re-read the person's proposals when they are
        older than the login's ``auth_refresh_age`` (JupyterHub's ``refresh_user``), so an
        ended proposal is seen here without the person visiting the hub.
        """
        name = self.current_user["name"]
        try:
            targets = load_targets(self.gateway.targets_file) if self.gateway.targets_file else ()
        except SettingsError as e:
            self.log.error("VM desktops are unavailable: %s", e)
            return Allowed({}, "the list of facility machines is broken. Contact the facility's support.")
        if not targets:
            return Allowed({})
        auth = self.hub_auth
        token = token if token is not None else auth.get_token(self)
        if token:
            try:
                who = await auth.user_for_token(token, use_cache=False, sync=False)
            except web.HTTPError as e:
                self.log.error("cannot refresh %s's proposals through the hub: %s", name, e.log_message or e)
                return Allowed({}, "the hub did not answer. Try again in a minute.")
            if not who or who.get("name") != name:
                self.log.info("%s is no longer signed in to the hub: no VM", name)
                return Allowed({})
        url = url_path_join(auth.api_url, "users", quote(name, safe=""))
        try:
            response = await httpclient.AsyncHTTPClient().fetch(
                url, headers={"Authorization": f"token {auth.api_token}"}, request_timeout=10)
            model = json.loads(response.body)
        except (httpclient.HTTPClientError, OSError, ValueError) as e:
            self.log.error("cannot read %s's proposals from the hub (GET %s): %s", name,
                           url.split("?")[0], e)
            return Allowed({}, "the hub did not answer. Try again in a minute.")
        known = read_auth_state(model.get("auth_state"))
        if known is None:
            return Allowed({})
        account, proposals = known
        return Allowed({t.id: t for t in targets_for(account, proposals, targets)})

    async def guacd_reachable(self) -> bool:
        if not self.guacd:
            return False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*self.guacd), self.gateway.connect_timeout)
        except (TimeoutError, OSError):
            return False
        writer.close()
        return True

    def page(self, title: str, body: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                        "img-src 'self' data: blob:; connect-src 'self'; style-src 'unsafe-inline'")
        self.finish(_PAGE.format(title=html.escape(title), body=body))

    def unavailable(self, why: str) -> None:
        self.page("VM desktop unavailable", f'<p class="message" id="vm-unavailable">The VM desktop is '
                  f'unavailable: {html.escape(why)}</p>', status=503)

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        self.page(f"{status_code}", f'<p class="message" id="vm-error">{html.escape(message)}</p>',
                  status=status_code)


_GATEWAY_DOWN = "the remote desktop gateway (guacd) is not running. Contact the facility's support."
#: what the page shows when an open connection is cut by the re-check
REVOKED_MESSAGE = ("This machine is no longer open to you: the proposal or role that gave it has ended. "
                   "Your other machines are listed one level up.")


class IndexHandler(_GatewayHandler):
    @web.authenticated
    async def get(self):
        allowed = await self.allowed()
        if allowed.problem:
            return self.unavailable(allowed.problem)
        if not allowed.targets:
            return self.page("Facility VMs", '<p class="message" id="vm-none">No facility virtual machine is '
                             'open to you (they are given by your proposals and roles).</p>')
        if not await self.guacd_reachable():
            return self.unavailable(_GATEWAY_DOWN)
        items = "".join(f'<li><a href="{html.escape(t.id)}/">{html.escape(t.title)}</a> ({t.protocol})</li>'
                        for t in allowed.targets.values())
        self.page("Facility VMs", f'<div class="message"><p>Facility virtual machines:</p><ul>{items}</ul></div>')


class GuacamoleJsHandler(_GatewayHandler):
    @web.authenticated
    def get(self):
        try:
            text = Path(self.gateway.client_js).read_bytes()
        except OSError:
            raise web.HTTPError(404, "guacamole-common-js is not installed with the VM gateway") from None
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
client.connect("width=" + w + "&height=" + h + "&dpi=96");
const mouse = new Guacamole.Mouse(client.getDisplay().getElement());
mouse.onEach(["mousedown", "mouseup", "mousemove"], (e) => client.sendMouseState(e.state, true));
const keyboard = new Guacamole.Keyboard(document);
keyboard.onkeydown = (k) => {{ client.sendKeyEvent(1, k); return false; }};
keyboard.onkeyup = (k) => client.sendKeyEvent(0, k);
window.addEventListener("resize", () => client.sendSize(window.innerWidth, window.innerHeight - 30));
window.addEventListener("beforeunload", () => client.disconnect());
window.daasClient = client;
</script>"""


class PageHandler(_GatewayHandler):
    @web.authenticated
    async def get(self, target_id):
        allowed = await self.allowed()
        if allowed.problem:
            return self.unavailable(allowed.problem)
        target = allowed.targets.get(target_id)
        if target is None:
            raise web.HTTPError(404, f"No facility machine {target_id!r} is open to you. The list of yours "
                                f"is one level up.")
        if not await self.guacd_reachable():
            return self.unavailable(_GATEWAY_DOWN)
        self.page(target.title, _CLIENT.format(title=html.escape(target.title)))


class TunnelHandler(_GatewayHandler, websocket.WebSocketHandler):
    """guacamole-common-js's WebSocketTunnel, relayed to guacd after the gateway's own handshake."""

    _guacd_writer = None
    _target: VmTarget | None = None
    _token = ""

    def select_subprotocol(self, subprotocols):
        return "guacamole" if "guacamole" in subprotocols else None

    async def get(self, target_id):
        user = self.current_user
        if not user:
            raise web.HTTPError(403, "Sign in to the hub to open a VM desktop.")
        allowed = await self.allowed()
        target = allowed.targets.get(target_id)
        if target is None:  # refused before any connection to guacd
            self.audit.write(audit_entry("refused", user=user["name"], target=target_id,
                                         client=self.request.remote_ip, detail="not in the user's allow-list"))
            raise web.HTTPError(403, f"No facility machine {target_id!r} is open to you.")
        if not self.guacd:
            raise web.HTTPError(503, "The VM desktop is unavailable: guacd is not configured.")
        try:
            credentials = read_credentials(target, owner=os.geteuid())
        except SettingsError as e:
            self.log.error("VM %s unavailable: %s", target.id, e)
            raise web.HTTPError(503, "The VM desktop is unavailable. Contact the facility's support.") from None
        recording = recording_parameters(self.gateway.recording_dir, user=user["name"], target_id=target.id)
        self._target = target
        self._params = connection_parameters(target, credentials, recording=recording)
        self._user = user["name"]
        self._token = self.hub_auth.get_token(self) or ""
        await websocket.WebSocketHandler.get(self, target_id)

    async def open(self, target_id):
        target = self._target
        size = guac.client_size({k: self.get_query_argument(k, "") for k in ("width", "height", "dpi")})
        self._parser = guac.InstructionParser()
        self._start = time.time()
        self._bytes_in = self._bytes_out = 0
        self._conn_id = ""
        wire = guac.Target(target.id, target.title, target.protocol, self._params)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.guacd),
                                                    self.gateway.connect_timeout)
            self._guacd_writer = writer
            self._conn_id, gparser, pending = await guac.guacd_handshake(
                reader, writer, wire, size, timeout=self.gateway.connect_timeout * 3)
        except (TimeoutError, OSError, guac.ProtocolError) as e:
            self.log.warning("VM %s for %s: %s", target.id, self._user, e)
            self.audit.write(audit_entry("failed", user=self._user, target=target.id, protocol=target.protocol,
                                         start=self._start, end=time.time(), client=self.request.remote_ip,
                                         detail=str(e)[:200]))
            self._start = None
            self.write_message(guac.encode("error", "The VM desktop is unavailable.", "519"))
            self.close(1011, "519")
            return
        self.log.info("VM %s connected for %s (guacd connection %s)", target.id, self._user, self._conn_id)
        self.write_message(guac.encode(guac.INTERNAL_OPCODE, guac.new_tunnel_id()))
        if pending:
            text = "".join(guac.encode(op, *args) for op, args in pending)
            self._bytes_in += len(text.encode())
            self.write_message(text)
        self._relay = asyncio.ensure_future(self._from_guacd(reader, gparser))
        self._watch = asyncio.ensure_future(self._recheck())

    async def _recheck(self):
        """Cut the connection once the machine is no longer the person's (checked every
        ``recheck_seconds``); keep it while the hub cannot say."""
        target = self._target
        while True:
            await asyncio.sleep(self.gateway.recheck_seconds)
            try:
                allowed = await self.allowed(self._token)
            except Exception:  # noqa: BLE001 - a failed check keeps the connection; the next one tries again
                self.log.exception("VM %s for %s: the access check failed", target.id, self._user)
                continue
            if allowed.problem or target.id in allowed.targets:
                continue
            self.log.warning("VM %s for %s: no longer in their allow-list, cutting the connection",
                             target.id, self._user)
            self.audit.write(audit_entry("revoked", user=self._user, target=target.id, protocol=target.protocol,
                                         start=self._start, end=time.time(), client=self.request.remote_ip,
                                         detail="no longer in the user's allow-list (proposal ended, role "
                                                "removed or signed out)"))
            try:
                await self.write_message(guac.encode("error", REVOKED_MESSAGE, guac.STATUS_CLIENT_UNAUTHORIZED))
            except websocket.WebSocketClosedError:
                pass
            self.close(1008, guac.STATUS_CLIENT_UNAUTHORIZED)  # guacamole-common-js reads the status here
            return

    async def _from_guacd(self, reader, parser):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                _, text = parser.feed_raw(parser.decoder.decode(data))
                if text:
                    self._bytes_in += len(data)
                    await self.write_message(text)
        except (websocket.WebSocketClosedError, guac.ProtocolError, OSError) as e:
            self.log.info("VM %s relay ended: %s", self._target.id, e)
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
                continue  # only the gateway chooses the target and its parameters
            out.append(guac.encode(opcode, *args))
        if out:
            data = "".join(out).encode()
            self._bytes_out += len(data)
            self._guacd_writer.write(data)

    def on_close(self):
        if self._guacd_writer is not None:
            self._guacd_writer.close()
        for task in (getattr(self, "_relay", None), getattr(self, "_watch", None)):
            if task and task is not asyncio.current_task():
                task.cancel()
        if getattr(self, "_start", None) is not None and self._target is not None:
            self.audit.write(audit_entry("connection", user=self._user, target=self._target.id,
                                         protocol=self._target.protocol, start=self._start, end=time.time(),
                                         bytes_in=self._bytes_in, bytes_out=self._bytes_out,
                                         client=self.request.remote_ip))
            self._start = None


def main(argv=None):
    app = VmGateway.instance()
    app.initialize(argv)
    try:
        app.start()
    except KeyboardInterrupt:  # the hub stops its services with SIGINT
        pass


if __name__ == "__main__":
    main()
