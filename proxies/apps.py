"""The application list: one desktop per graphical application.

A YAML file (docs/desktops.md) checked against the packaged schema
``daas_hub/schemas/desktop-apps.schema.yaml``; the default ships as
``daas_hub/proxies/apps.yaml``. :func:`plan_desktops` turns the list into
jupyter-server-proxy entries for the applications this session can run, and says
why the others are not offered. Pure but for the ``which`` it is given.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from daas_hub.errors import SettingsError
from daas_hub.schema import read_yaml, validate

from .desktop import DEFAULT_GEOMETRY, WEBSOCKIFY, app_entry_name, build_vnc_entry, full_desktop_startup

#: a site's own application list, when c.DesktopApps.apps_file is not set
APP_LIST_ENV = "DAAS_HUB_DESKTOP_APPS"


@dataclass(frozen=True)
class DesktopApp:
    id: str
    title: str
    command: tuple[str, ...]
    description: str = ""
    icon: str = ""
    profiles: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    geometry: str = DEFAULT_GEOMETRY

    @property
    def path_info(self) -> str:
        return f"apps/{self.id}/desktop/"


def icon_path(name: str) -> str:
    """The SVG icon daas-hub ships for ``name`` (an application id, ``vm``), or the generic one."""
    icons = resources.files("daas_hub.proxies").joinpath("icons")
    icon = icons.joinpath(f"{name}.svg")
    return str(icon if icon.is_file() else icons.joinpath("application.svg"))


def default_app_list_path() -> str:
    return str(resources.files("daas_hub.proxies").joinpath("apps.yaml"))


def parse_app_list(document, file: str | Path) -> tuple[DesktopApp, ...]:
    """The applications of a parsed application list; raises SettingsError."""
    if document is None:
        raise SettingsError(file, "", "the application list is empty",
                            "list the applications under 'applications:' (docs/desktops.md)")
    validate(document, "desktop-apps", file)
    apps, seen = [], set()
    for i, entry in enumerate(document["applications"]):
        if entry["id"] in seen:
            raise SettingsError(file, f'applications[{i}] "{entry["id"]}" > id',
                                "this id is used by an earlier application", "give each application its own id")
        seen.add(entry["id"])
        provided = entry.get("provided_by", {})
        apps.append(DesktopApp(
            id=entry["id"], title=entry["title"], command=tuple(entry["command"]),
            description=entry.get("description", ""), icon=entry.get("icon", ""),
            profiles=tuple(provided.get("profiles", ())), packages=tuple(provided.get("packages", ())),
            geometry=entry.get("geometry", DEFAULT_GEOMETRY),
        ))
    return tuple(apps)


def load_app_list(path: str | None = None) -> tuple[DesktopApp, ...]:
    path = path or default_app_list_path()
    document = read_yaml(path, what="application list",
                         fix_missing="create it (docs/desktops.md has an example) or unset the setting")
    return parse_app_list(document, path)


@dataclass(frozen=True)
class DesktopPlan:
    """The server-proxy entries of a session's desktops, and what was left out and why."""

    servers: dict
    offered: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (what, why)


def plan_desktops(
    apps: tuple[DesktopApp, ...], *, proposals_dir: str, which: Callable[[str], str | None],
    full_desktop: bool = True, xstartup: str | None = None, guard: tuple[str, ...] = (),
) -> DesktopPlan:
    """The desktops this session can run.

    ``which`` finds executables on the session's PATH (``shutil.which``). Without
    ``vncserver``, ``openbox`` there is no desktop at all; an application whose
    executable is missing is skipped with the reason.
    """
    servers: dict = {}
    offered: list[str] = []
    skipped: list[tuple[str, str]] = []
    vncserver, openbox = which("vncserver"), which("openbox")
    if not vncserver or not openbox:
        missing = " and ".join(n for n, p in (("vncserver", vncserver), ("openbox", openbox)) if not p)
        why = (f"{missing} not found on the session's PATH: the image needs TigerVNC "
               "(tigervnc-standalone-server) and openbox")
        skipped.append(("desktop", why))
        skipped.extend((f"application {a.id}", why) for a in apps)
        return DesktopPlan({}, (), tuple(skipped))

    if full_desktop:
        terminal = "xterm" if which("xterm") else None
        if not terminal:
            skipped.append(("desktop", "xterm not found on the session's PATH: the desktop needs a terminal"))
        else:
            file_manager = "pcmanfm" if which("pcmanfm") else None
            if not file_manager:
                skipped.append(("desktop file manager", "pcmanfm not found on the session's PATH: "
                                "the desktop opens without a file manager"))
            servers[WEBSOCKIFY] = build_vnc_entry(
                vncserver, full_desktop_startup(proposals_dir, terminal=terminal, file_manager=file_manager),
                proposals_dir, title="Desktop", path_info="desktop", xstartup=xstartup,
                # jupyter-remote-desktop-proxy's own entry point brings the tile
                launcher=False, guard=guard,
            )
            offered.append("desktop")

    for app in apps:
        if not which(app.command[0]):
            skipped.append((f"application {app.id}",
                            f"no usable {app.command[0]} on the session's PATH"
                            + (f" (provided by: {', '.join(app.packages)})" if app.packages else "")))
            continue
        servers[app_entry_name(app.id)] = build_vnc_entry(
            vncserver, shlex.join([which(app.command[0]), *app.command[1:]]), proposals_dir, title=app.title, path_info=app.path_info,
            xstartup=xstartup, geometry=app.geometry, icon_path=app.icon or icon_path(app.id), guard=guard,
        )
        offered.append(app.id)
    return DesktopPlan(servers, tuple(offered), tuple(skipped))
