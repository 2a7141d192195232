"""A Linux desktop in the browser: TigerVNC on a unix socket, shown with noVNC.

Builds on jupyter-remote-desktop-proxy (its noVNC viewer at ``<server>/desktop/``)
but starts the VNC server with a plain command list instead of its
``/bin/sh -c`` wrapper, so stopping the entry stops Xvnc and the desktop too.
The VNC server listens on a unix socket only, never on a TCP port.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources

#: the light session the desktop runs: openbox, a terminal, the proposals folder
XSTARTUP_ENV = "DAAS_HUB_DESKTOP_XSTARTUP"


def build_desktop_entry(vncserver: str, xstartup: str, *, geometry: str = "1680x1050") -> dict:
    """The jupyter-server-proxy entry for the desktop; pure."""
    return {
        "command": [
            vncserver, "-rfbunixpath", "{unix_socket}", "-rfbport", "-1",
            "-xstartup", xstartup, "-verbose", "-fg", "-geometry", geometry,
            "-SecurityTypes", "None",
        ],
        "timeout": 30,
        "unix_socket": True,
        "raw_socket_proxy": True,
        "new_browser_tab": True,
        "launcher_entry": {"title": "Desktop", "path_info": "desktop"},
    }


def setup_desktop() -> dict:
    """Entry point: the desktop, when a VNC server is installed in the session."""
    vncserver = shutil.which("vncserver")
    if not vncserver:
        raise RuntimeError("no vncserver on PATH: install TigerVNC in the session image for the desktop")
    xstartup = os.environ.get(XSTARTUP_ENV) or str(resources.files("daas_hub.proxies").joinpath("xstartup"))
    return build_desktop_entry(vncserver, xstartup)
