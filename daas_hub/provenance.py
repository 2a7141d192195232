"""Provenance records: what a session ran with, so an analysis can be re-run later.

Each session that has a proposal with a ``processed`` folder writes one small JSON
record to ``<processed>/.daas-hub/provenance/<UTC start>-<user>-<server>.json``
(docs/provenance.md). ``daas-hub-session`` writes it as the session's own account,
before it becomes the notebook server; a problem is one line on stderr, never a
failed start.

The hub passes what it checked through the session's environment:
``DAAS_HUB_REQUEST`` (the checked request, :meth:`SessionRequest.to_options`) and
``DAAS_HUB_SOFTWARE`` (:func:`profile_software`: the profile's image or
environment for the chosen backend). :func:`build_record` is pure; the I/O is in
:func:`write_record` and :func:`installed_packages`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from .options import OPTION_NAMES
from .profiles import Profile

REQUEST_ENV = "DAAS_HUB_REQUEST"
#: set by daas-hub-session to the record it wrote, for the server's exit hook (record_stop)
RECORD_ENV = "DAAS_HUB_PROVENANCE_RECORD"
SOFTWARE_ENV = "DAAS_HUB_SOFTWARE"
FOLDER = Path(".daas-hub") / "provenance"
FORMAT = 1


def profile_software(profile: Profile, backend: str) -> dict:
    """What defines a profile's software on ``backend``: its image or environment.

    The hub passes it to the session; ``daas-hub provenance`` computes it again
    from the current catalogue to tell whether "start as recorded" gets the same.
    """
    if backend == "kubernetes":
        return {"image": profile.image or ""}
    if backend == "slurm":
        return {"image": profile.apptainer_image or "", "environment": profile.slurm_environment}
    return {"environment": dict(sorted(profile.local_environment.items()))}


def package_lock(packages: Iterable[str]) -> dict:
    """The sorted ``name==version`` list and its sha256 (a lock of the session's Python)."""
    names = sorted(set(packages), key=str.lower)
    digest = hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
    return {"packages": names, "sha256": digest}


def installed_packages() -> list[str]:
    """``name==version`` of every distribution the running Python sees."""
    from importlib import metadata

    out = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.add(f"{name}=={dist.version}")
    return sorted(out, key=str.lower)


def start_again_url(options: Mapping, *, hub_url: str = "", base_url: str = "/") -> str:
    """The hub's permalink for ``options``: opening it starts a session with exactly these
    options (JupyterHub's ``opt-`` query options; a refused option shows the form, prefilled
    from the link). Absolute when the hub's public URL is known."""
    query = urlencode([(f"opt-{name}", _query_value(options[name])) for name in OPTION_NAMES if name in options])
    if hub_url:
        return f"{hub_url.rstrip('/')}/spawn?{query}"
    return f"/{base_url.strip('/')}/hub/spawn?{query}".replace("//", "/")


def _query_value(value) -> str:
    if isinstance(value, float) and value == int(value):
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value)


def build_record(*, request: Mapping, software: Mapping, started: datetime, user: str, server: str,
                 version: str, python: str, packages: Iterable[str], image_digest: str = "",
                 hub_url: str = "", base_url: str = "/") -> dict:
    """The provenance record of one session; pure (plain values in, a dict out)."""
    lock = package_lock(packages)
    software = dict(software)
    if image_digest:
        software["image_digest"] = image_digest
    return {
        "format": FORMAT,
        "daas_hub_version": version,
        "user": user,
        "server": server,
        "started": started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "stopped": None,
        "proposal": request.get("proposal"),
        "profile": request.get("profile"),
        "backend": request.get("backend"),
        "resources": {name: request[name] for name in ("cpu", "memory", "gpu", "hours") if name in request},
        "request": {name: request[name] for name in OPTION_NAMES if name in request},
        "software": software,
        "python": python,
        "packages": lock["packages"],
        "packages_sha256": lock["sha256"],
        "start_again_url": start_again_url(request, hub_url=hub_url, base_url=base_url),
    }


def record_name(record: Mapping) -> str:
    """``<UTC start>-<user>-<server>.json``, safe as a file name."""
    stamp = record["started"].replace(":", "").replace("-", "")
    def safe(text) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text)) or "_"

    return f"{stamp}-{safe(record['user'])}-{safe(record['server'])}.json"


def differences(record: Mapping, current: Mapping | None) -> list[str]:
    """Sentences naming what a start "as recorded" would get differently (empty: the same)."""
    if current is None:
        return [f'the profile "{record.get("profile")}" is no longer in the catalogue']
    recorded = dict(record.get("software") or {})
    recorded.pop("image_digest", None)
    out = []
    for key in sorted(set(recorded) | set(current)):
        if recorded.get(key) != current.get(key):
            out.append(f"the profile's {key} changed: recorded {recorded.get(key)!r}, now {current.get(key)!r}")
    return out


def processed_folder(plan, proposal: str) -> str | None:
    """The ``processed`` source folder of ``proposal`` in the mount plan, if it has one."""
    for m in plan.mounts:
        if m.proposal == proposal and not m.read_only and Path(m.path).name == "processed":
            return m.source
    return None


def write_record(record: Mapping, processed: str) -> Path:
    """Write ``record`` under ``processed`` (never over an existing record)."""
    folder = Path(processed) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / record_name(record)
    with open(path, "x", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return path


def write_session_record(plan, env: Mapping, *, now: datetime | None = None) -> Path | None:
    """The session's record from its environment (``daas-hub-session``); None when it has no
    proposal with a processed folder."""
    import sys

    from . import __version__

    request = json.loads(env.get(REQUEST_ENV) or "null")
    if not isinstance(request, dict) or not request.get("proposal") or plan is None:
        return None
    processed = processed_folder(plan, str(request["proposal"]))
    if processed is None or not os.path.isdir(processed):
        return None
    software = json.loads(env.get(SOFTWARE_ENV) or "{}")
    record = build_record(
        request=request, software=software if isinstance(software, dict) else {},
        started=now or datetime.now(UTC), user=env.get("JUPYTERHUB_USER", ""),
        server=env.get("JUPYTERHUB_SERVER_NAME", "") or "default", version=__version__,
        python=sys.executable, packages=installed_packages(),
        image_digest=env.get("DAAS_HUB_IMAGE_DIGEST", ""),
        hub_url=env.get("JUPYTERHUB_PUBLIC_HUB_URL", ""), base_url=env.get("JUPYTERHUB_BASE_URL", "/"),
    )
    return write_record(record, processed)


def describe(record: Mapping, catalogue) -> tuple[list[str], list[str]]:
    """The lines ``daas-hub provenance`` prints, and the differences from ``catalogue`` (pure)."""
    try:
        profile = catalogue.get(str(record.get("profile")))
    except KeyError:
        profile = None
    current = profile_software(profile, str(record.get("backend"))) if profile else None
    changed = differences(record, current)
    res = record.get("resources") or {}
    lines = [
        f"session:   {record.get('user')} / {record.get('server')}, proposal {record.get('proposal')}",
        f"started:   {record.get('started')}" + (f", stopped {record['stopped']}" if record.get("stopped") else ""),
        f"profile:   {record.get('profile')} on {record.get('backend')} (daas-hub {record.get('daas_hub_version')})",
        "resources: " + ", ".join(f"{k} {v}" for k, v in res.items()),
        f"software:  {json.dumps(record.get('software') or {}, sort_keys=True)}",
        f"python:    {record.get('python')}, {len(record.get('packages') or [])} packages, "
        f"sha256 {record.get('packages_sha256')}",
        f"start again: {record.get('start_again_url')}",
    ]
    if changed:
        lines += ["NOT the same software as recorded:"] + [f"  - {c}" for c in changed]
    else:
        lines.append("the current catalogue gives this profile the same image/environment as recorded")
    return lines, changed


def record_stop(path: str, *, now: datetime | None = None) -> None:
    """Write the stop time into the session's record (replaced whole, never half-written)."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    record["stopped"] = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _stop_quietly(path: str) -> None:
    try:
        record_stop(path)
    except (OSError, ValueError) as e:
        print(f"daas-hub: no stop time in the provenance record {path} ({e})", flush=True)


# -- the session's server extension: the stop time when the server ends (enabled by
#    etc/daas_hub_notices.json). The server exits normally on the hub's stop (SIGTERM)
#    and on Slurm's scancel or time limit; a SIGKILL leaves "stopped" empty.
def _jupyter_server_extension_points():
    return [{"module": "daas_hub.provenance"}]


def _load_jupyter_server_extension(serverapp):
    path = os.environ.get(RECORD_ENV)
    if path:
        import atexit

        atexit.register(_stop_quietly, path)
        serverapp.log.info("daas-hub: the provenance record %s gets its stop time when the server ends", path)
