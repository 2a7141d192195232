"""Linux desktops in the browser: TigerVNC on a unix socket, shown with noVNC.

Builds on jupyter-remote-desktop-proxy: its noVNC viewer (resizing to the browser
window, a clipboard panel both ways) is served unchanged at ``<server>/desktop/``
and, for application desktops, at ``<server>/apps/<id>/desktop/``
(:mod:`daas_hub.proxies.extension`). What changes is how the VNC server runs:

- a plain command list instead of the package's ``/bin/sh -c`` wrapper, run under
  the desktop guard (:mod:`daas_hub.proxies.lifetime`), so stopping the entry, or the
  session's server ending in any way (SIGKILL included), ends Xvnc and everything
  in the desktop;
- ``-rfbunixpath`` with ``-rfbport -1`` and ``-nolisten tcp``: Xvnc listens on a
  unix socket only, never on a TCP port another process could reach;
- the program starts through ``openbox --startup`` (starting it beside the
  window manager left black desktops now and then);
- only keyboard, mouse and clipboard messages count as activity
  (:class:`InputOnlyActivity`), so an open but unused desktop tab does not keep the
  session from being culled.

The builders are pure; :class:`DesktopServerProcess` is the thin part that plugs
the activity rule into jupyter-server-proxy's handler.
"""

from __future__ import annotations

import shlex
from importlib import resources

from jupyter_server_proxy.config import ServerProcess

#: the program the desktop's xstartup hands to ``openbox --startup``
STARTUP_ENV = "DAAS_HUB_DESKTOP_STARTUP"
#: where the program starts (the proposals folder)
WORKDIR_ENV = "DAAS_HUB_DESKTOP_DIR"
#: the name jupyter-remote-desktop-proxy's viewer connects to (``../desktop-websockify/``)
WEBSOCKIFY = "desktop-websockify"
DEFAULT_GEOMETRY = "1680x1050"


def xstartup_path() -> str:
    return str(resources.files("daas_hub.proxies").joinpath("xstartup"))


def full_desktop_startup(proposals_dir: str, *, terminal: str = "xterm", file_manager: str | None = "pcmanfm") -> str:
    """The program of the full desktop: a file manager on the proposals folder and a terminal."""
    term = shlex.join([terminal])
    if not file_manager:
        return term
    fm = shlex.join([file_manager, proposals_dir])
    return shlex.join(["/bin/sh", "-c", f"{fm} & exec {term}"])


def build_vnc_entry(
    vncserver: str, startup: str, workdir: str, *,
    title: str, path_info: str, xstartup: str | None = None, geometry: str = DEFAULT_GEOMETRY,
    launcher: bool = True, icon_path: str = "", guard: tuple[str, ...] = (),
) -> dict:
    """The jupyter-server-proxy settings of one desktop (a ``ServerProcess`` dict); pure.

    ``startup`` is the command line openbox starts (``openbox --startup``), run in
    ``workdir``. ``guard``: the command prefix that ties the desktop to the server's
    lifetime (:func:`daas_hub.proxies.lifetime.guard_prefix`).
    """
    launcher_entry = {"enabled": launcher, "title": title, "path_info": path_info, "category": "Desktops"}
    if icon_path:
        launcher_entry["icon_path"] = icon_path
    return {
        "command": [
            *guard, vncserver, "-rfbunixpath", "{unix_socket}", "-rfbport", "-1", "-nolisten", "tcp",
            "-xstartup", xstartup or xstartup_path(), "-verbose", "-fg", "-geometry", geometry,
            "-SecurityTypes", "None",
        ],
        "environment": {STARTUP_ENV: startup, WORKDIR_ENV: workdir},
        "timeout": 30,
        "unix_socket": True,
        "raw_socket_proxy": True,
        "new_browser_tab": True,
        "update_last_activity": False,
        "launcher_entry": launcher_entry,
    }


def app_entry_name(app_id: str) -> str:
    """The server-proxy name of an application desktop; its viewer is ``apps/<id>/desktop/``."""
    return f"apps/{app_id}/{WEBSOCKIFY}"


def _record_input_activity(handler) -> None:
    # Jupyter Server collects extensions' activity times here (jupyter-server-proxy does the same)
    from jupyter_server.base.handlers import utcnow

    handler.settings.setdefault("last_activity_times", {})["daas-hub-desktop-input"] = utcnow()


class DesktopServerProcess(ServerProcess):
    """A desktop entry whose websocket traffic counts as activity only when it carries input.

    jupyter-server-proxy counts every message as activity (its
    ``update_last_activity`` hook only sees the request, not the message), so the
    entry turns that off and the handler follows the VNC stream itself.
    """

    def make_proxy_handler(self):
        cls, kwargs = super().make_proxy_handler()
        if cls is None:
            return cls, kwargs
        from .rfb import InputDetector

        class _InputOnlyActivity(cls):
            def on_message(self, message):
                detector = getattr(self, "_daas_input", None)
                if detector is None:
                    detector = self._daas_input = InputDetector()
                data = message.encode() if isinstance(message, str) else message
                if detector.feed(data):
                    _record_input_activity(self)
                return super().on_message(message)

        return _InputOnlyActivity, kwargs
