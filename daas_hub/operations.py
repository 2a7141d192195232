"""Running the service: the operations settings, the idle culler service, JSON logs.

:class:`Operations` holds every operations setting as a traitlet (configure it
as ``c.Operations.<name>`` in ``jupyterhub_config.py``); the hub side
(:mod:`daas_hub.spawners.operations`) reads it from the hub's configuration.
:func:`culler_service` builds the jupyterhub-idle-culler service entry and
:class:`JsonFormatter` the optional JSON log format. No JupyterHub imports.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from importlib import import_module

from traitlets import Bool, Float, Int, Unicode, validate
from traitlets.config import Configurable
from traitlets.utils.importstring import import_item

#: the culler's defaults (docs/operations.md#culling)
CULL_DEFAULTS = {"enabled": True, "timeout": 3600, "every": 300, "max_age": 0, "concurrency": 10}
CULLER_SERVICE = "daas-idle-culler"


class Operations(Configurable):
    """Lifetimes, announcements, usage accounting: the hub's operations settings."""

    store = Unicode(
        "daas-operations.sqlite",
        config=True,
        help="""The operations store: a SQLite file with one row per session (usage
        accounting, ``daas-hub status``) and the announcements. A relative path is
        relative to the hub's working directory; the site settings put it beside the
        hub's database (``<hub.data_dir>/daas-operations.sqlite``).

        .. versionadded:: 0.2
        """,
    )

    lifetime_warning = Float(
        900,
        config=True,
        help="""Seconds before a session's end (its requested ``hours``) from which the hub
        home page and JupyterLab show the notice that it will stop. Example: ``900`` (15 min).

        .. versionadded:: 0.2
        """,
    )

    max_extension = Float(
        4,
        config=True,
        help="""The most hours one extension adds to a running session. Every extension must
        also fit the person's quota (``hours``, summed over their live sessions).
        Example: ``4``.

        .. versionadded:: 0.2
        """,
    )

    enforce_lifetimes = Bool(
        True,
        config=True,
        help="""Stop each session when its requested ``hours`` (plus extensions) are over.
        The check runs on every poll of the server (``Spawner.poll_interval``, 30 s by
        default), so a session stops at most one poll interval late.

        .. versionadded:: 0.2
        """,
    )

    notice_refresh = Int(
        60,
        config=True,
        help="""Seconds between two refreshes of the notice bar in JupyterLab (time left,
        announcements). Example: ``60``.

        .. versionadded:: 0.2
        """,
    )

    clock = Unicode(
        "time.time",
        config=True,
        help="""Import path of the clock (a function returning epoch seconds) that lifetimes,
        announcements and usage records use. Leave it; the tests set a clock they
        advance themselves.

        .. versionadded:: 0.2
        """,
    )

    @validate("lifetime_warning", "max_extension")
    def _not_negative(self, proposal):
        if proposal.value < 0:
            raise ValueError(f"Operations.{proposal.trait.name} must not be negative, got {proposal.value}")
        return proposal.value

    @validate("clock")
    def _check_clock(self, proposal):
        try:
            fn = import_item(proposal.value)
        except (ImportError, ValueError, AttributeError) as e:
            raise ValueError(f"Operations.clock = {proposal.value!r} cannot be imported ({e})") from None
        if not callable(fn):
            raise ValueError(f"Operations.clock = {proposal.value!r} is not a function")
        return proposal.value

    def now(self) -> float:
        return float(import_item(self.clock)())


def culler_service(settings: dict, python: str = sys.executable) -> tuple[dict, dict] | None:
    """The jupyterhub-idle-culler service and its role, from the site file's ``operations.culling``.

    ``None`` when culling is switched off. Idle means no activity the hub hears of:
    JupyterLab's kernels and terminals, and the desktops' real input (docs/desktops.md).
    """
    cfg = {**CULL_DEFAULTS, **(settings or {})}
    if not cfg["enabled"]:
        return None
    command = [python, "-m", "jupyterhub_idle_culler", f"--timeout={int(cfg['timeout'])}",
               f"--cull-every={int(cfg['every'])}", f"--concurrency={int(cfg['concurrency'])}"]
    if cfg["max_age"]:
        command.append(f"--max-age={int(cfg['max_age'])}")
    service = {"name": CULLER_SERVICE, "command": command}
    role = {"name": CULLER_SERVICE, "services": [CULLER_SERVICE],
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}
    return service, role


def json_logging_config() -> dict:
    """``Application.logging_config`` that makes the hub's console log one JSON object per line."""
    return {
        "formatters": {"daas_json": {"()": "daas_hub.operations.JsonFormatter"}},
        "handlers": {"console": {"formatter": "daas_json"}},
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a spawn's fields (``extra={"daas": ...}``)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "daas", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def hub_template_var(name: str):
    """A ``template_vars`` callable resolved in the hub: ``daas_hub.spawners.operations.<name>(user)``.

    The core names the hub-side function by import path (it imports no JupyterHub).
    """
    def call(user):
        return getattr(import_module("daas_hub.spawners.operations"), name)(user)

    call.__name__ = name
    return call


def apply_operations(c, section: dict, data_dir) -> None:
    """The site file's ``operations`` section onto the hub's config (docs/operations.md)."""
    from pathlib import Path

    from .usage import store_path

    section = section or {}
    c.Operations.store = str(store_path(Path(data_dir)))
    lifetimes = section.get("lifetimes", {})
    for key, trait in (("warning", "lifetime_warning"), ("max_extension", "max_extension"),
                       ("enforce", "enforce_lifetimes"), ("notice_refresh", "notice_refresh")):
        if key in lifetimes:
            setattr(c.Operations, trait, lifetimes[key])
    culler = culler_service(section.get("culling", {}))
    if culler:
        c.JupyterHub.services.append(culler[0])
        c.JupyterHub.load_roles.append(culler[1])
    if section.get("logs", {}).get("format") == "json":
        c.JupyterHub.logging_config = json_logging_config()
    c.JupyterHub.template_vars["daas_announcements"] = hub_template_var("announcements")
    c.JupyterHub.template_vars["daas_lifetimes"] = hub_template_var("lifetimes")
