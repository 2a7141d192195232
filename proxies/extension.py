"""The daas-hub server extension of the session: desktops, application desktops, VM link.

Enabled by ``etc/jupyter/jupyter_server_config.d/daas_hub_proxies.json`` (installed
with the package). At link time it ends desktops an earlier server of this session
left behind (:func:`daas_hub.proxies.lifetime.reap_orphans`) and adds the desktop
entries to ``c.ServerProxy.servers`` (so jupyter-server-proxy supervises them and
shows their launcher tiles, and our ``desktop-websockify`` wins over
jupyter-remote-desktop-proxy's entry point of the same name); at load time it
serves jupyter-remote-desktop-proxy's viewer for each application desktop, and
``<server>/vm/``: a link to the hub's VM gateway (:mod:`daas_hub.proxies.gateway`).
The session never talks to guacd and holds no VM credential.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from traitlets import Bool, Unicode, default, observe
from traitlets.config import Configurable

from .apps import APP_LIST_ENV, icon_path, load_app_list, plan_desktops
from .desktop import DesktopServerProcess
from .lifetime import guard_prefix, reap_orphans

#: the VM gateway's hub service name, set by the hub (daas_hub.vmgateway.SERVICE_ENV)
VM_SERVICE_ENV = "DAAS_HUB_VM_SERVICE"


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
    for pid, cmd in reap_orphans():
        log.warning("daas-hub: ended %s (pid %d), left behind by an earlier server of this session", cmd, pid)
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
    plan = plan_desktops(apps, proposals_dir=workdir, which=which, full_desktop=cfg.full_desktop,
                         guard=tuple(guard_prefix()))
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
    if os.environ.get(VM_SERVICE_ENV) and "vm" not in servers:
        # a launcher tile only: no process, no proxy; <server>/vm/ leads to the hub's gateway
        servers["vm"] = {"launcher_entry": {"title": "Facility VMs", "path_info": "vm/", "category": "Desktops",
                                            "icon_path": icon_path("vm")},
                         "new_browser_tab": True}
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

    service = os.environ.get(VM_SERVICE_ENV, "")
    if service:
        hub_base = os.environ.get("JUPYTERHUB_BASE_URL", "/")
        gateway = url_path_join(hub_base, "services", service) + "/"
        vm = url_path_join(base, "vm")
        handlers += [(vm, web.RedirectHandler, {"url": gateway}),
                     (vm + "/.*", VmLinkHandler, {"gateway": gateway})]
    serverapp.web_app.add_handlers(".*", handlers)


class VmLinkHandler(JupyterHandler):
    """``<server>/vm/<id>/`` -> the gateway's page for it (the gateway checks who may open it)."""

    def initialize(self, gateway):
        self.gateway = gateway

    @web.authenticated
    def get(self):
        rest = self.request.path.split("/vm/", 1)[1]
        self.redirect(self.gateway + rest)


def _jupyter_server_extension_points():
    return [{"module": "daas_hub.proxies.extension"}]

