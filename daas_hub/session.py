"""Session start-up, run as the session's own user before the notebook server.

``daas-hub-session COMMAND...`` lays out the proposals folder described by the
mount plan in ``$DAAS_HUB_MOUNT_PLAN`` (JSON, computed by the hub), then replaces
itself with ``COMMAND``. Running as the user, not as root, means a user's own
symbolic links in their home can never steer a privileged write.

What it manages: the symbolic links ``<root>/<id>/raw`` and ``processed`` and the
``ARCHIVED-README.txt`` and ``NO-DATA-README.txt`` notices. It never deletes anything
else: a proposal that was removed loses its links, and its folder only if nothing else
is left in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .mounts import MISSING_NOTICES, NOTICE_NAMES, MountPlan, missing_text

PLAN_ENV = "DAAS_HUB_MOUNT_PLAN"
#: set by the Slurm job script: the node address the single-user server must listen on
BIND_ENV = "DAAS_HUB_BIND_ADDRESS"
#: the file-creation mask of the session (octal), set by the hub (``SessionSetup.umask``)
UMASK_ENV = "DAAS_HUB_UMASK"
#: a course's material (JSON: url, branch, folder), set by the hub for course sessions
MATERIAL_ENV = "DAAS_HUB_MATERIAL"
#: the longest a material pull may take before the session starts without it (seconds)
MATERIAL_TIMEOUT = 120
#: group-writable, nothing for others: what a team's shared ``processed`` folder needs
DEFAULT_UMASK = 0o007
_LINK_NAMES = ("raw", "processed")


def _say(msg: str) -> None:
    print(f"daas-hub-session: {msg}", file=sys.stderr, flush=True)


def _clear_managed(folder: Path, keep: set[str]) -> None:
    """Remove links and notices in ``folder`` that are not in ``keep``."""
    for child in folder.iterdir():
        if child.name in keep:
            continue
        if child.is_symlink() and child.name in _LINK_NAMES:
            child.unlink()
        elif child.name in NOTICE_NAMES and child.is_file() and not child.is_symlink():
            child.unlink()


def materialize(plan: MountPlan, home: Path) -> None:
    """Make ``home/<plan.root>`` show exactly the plan's proposals."""
    root = home / plan.root
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        aside = root.with_name(root.name + ".moved-by-daas-hub")
        n = 0
        while aside.is_symlink() or aside.exists():  # never overwrite an earlier one
            n += 1
            aside = root.with_name(f"{root.name}.moved-by-daas-hub.{n}")
        _say(f"{root} was not a folder; moved it to {aside}")
        root.rename(aside)
    root.mkdir(mode=0o755, parents=True, exist_ok=True)

    missing = {m.path for m in plan.mounts if not os.path.isdir(m.source)}  # as this user sees it
    wanted: dict[str, set[str]] = {pid: set() for pid in plan.proposals}
    for entry in (*plan.mounts, *plan.notices):
        name = Path(entry.path).name
        if entry.path in missing:
            name = MISSING_NOTICES[name] if name in MISSING_NOTICES else name
        wanted.setdefault(entry.proposal, set()).add(name)

    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink() and child.name not in wanted:
            _clear_managed(child, keep=set())
            try:
                child.rmdir()
            except OSError:
                _say(f"kept {child}: you are no longer on proposal {child.name}, "
                     "but the folder holds files of yours")
    for pid, names in wanted.items():
        folder = root / pid
        folder.mkdir(mode=0o755, exist_ok=True)
        _clear_managed(folder, keep=names)

    for m in plan.mounts:
        link = home / m.path
        if m.path in missing:
            if link.is_symlink():
                link.unlink()
            kind = link.name if link.name in MISSING_NOTICES else "raw" if m.read_only else "processed"
            notice = link.with_name(MISSING_NOTICES[kind])
            if notice.is_symlink():
                notice.unlink()
            notice.write_text(missing_text(m.proposal, kind, m.source), encoding="utf-8")
            _say(f"proposal {m.proposal}: {m.source} is not a folder this session can open; wrote {notice.name}")
            continue
        if link.is_symlink():
            if os.readlink(link) == m.source:
                continue
            link.unlink()
        elif link.exists():
            _say(f"kept {link}: it is your own file or folder, not a link to the proposal data")
            continue
        link.symlink_to(m.source, target_is_directory=True)
    for n in plan.notices:
        path = home / n.path
        if path.is_symlink():
            path.unlink()
        path.write_text(n.text, encoding="utf-8")


def parse_umask(text: str) -> int:
    """The session's umask from ``$DAAS_HUB_UMASK`` (octal, e.g. ``0007``); the default
    when unset or unreadable (never a mask that lets others write)."""
    try:
        value = int(text.strip(), 8) if text.strip() else DEFAULT_UMASK
    except ValueError:
        _say(f"ignored {UMASK_ENV}={text!r} (not an octal mask); using {DEFAULT_UMASK:04o}")
        return DEFAULT_UMASK
    if not 0 <= value <= 0o777:
        return DEFAULT_UMASK
    return value | 0o002  # others never get write access


def bind_service_url(url: str, address: str) -> str:
    """``url`` with its host replaced by ``address`` (the port is kept)."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))


def _write_provenance(plan: MountPlan | None) -> None:
    """The session's provenance record (daas_hub.provenance); a problem never stops the start."""
    try:
        from .provenance import write_session_record

        path = write_session_record(plan, os.environ)
    except Exception as e:  # noqa: BLE001 - a record is a courtesy: one line, then start the server
        _say(f"wrote no provenance record ({type(e).__name__}: {e})")
        return
    if path is not None:
        _say(f"provenance record: {path}")
        from .provenance import RECORD_ENV

        os.environ[RECORD_ENV] = str(path)  # the server's exit hook adds the stop time


def pull_material(text: str, home: Path) -> None:
    """Pull a course's git repository into ``home/<folder>`` with nbgitpuller's ``gitpuller``:
    a first clone, or a merge that keeps the participant's own changes. The URL comes from
    the course (checked by the hub against ``CourseBook.material_prefixes``), never from
    the participant. A failure is said and the session starts without it."""
    try:
        material = json.loads(text)
        url, branch, folder = material["url"], material.get("branch", "main"), material.get("folder", "course")
    except (ValueError, KeyError, TypeError) as e:
        _say(f"unreadable course material ({e}); starting without it")
        return
    puller = Path(sys.executable).parent / "gitpuller"
    try:
        done = subprocess.run([str(puller), url, branch, str(home / folder)], cwd=home, timeout=MATERIAL_TIMEOUT,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        _say(f"could not pull the course material into ~/{folder} ({type(e).__name__}); starting without it")
        return
    if done.returncode:
        tail = " | ".join(done.stdout.strip().splitlines()[-3:])
        _say(f"could not pull the course material into ~/{folder} ({tail}); starting without it")
    else:
        _say(f"course material pulled into ~/{folder}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        _say("usage: daas-hub-session COMMAND [ARGS...]")
        raise SystemExit(2)
    os.umask(parse_umask(os.environ.pop(UMASK_ENV, "")))
    text = os.environ.pop(PLAN_ENV, "")
    plan = None
    if text:
        try:
            plan = MountPlan.from_json(text)
            materialize(plan, Path(os.path.expanduser("~")))
        except (ValueError, KeyError, TypeError, OSError) as e:
            _say(f"could not lay out the proposals folder ({e}); starting without it")
    material = os.environ.pop(MATERIAL_ENV, "")
    if material:
        pull_material(material, Path(os.path.expanduser("~")))
    _write_provenance(plan)
    address = os.environ.pop(BIND_ENV, "").strip()
    if address and os.environ.get("JUPYTERHUB_SERVICE_URL"):
        os.environ["JUPYTERHUB_SERVICE_URL"] = bind_service_url(os.environ["JUPYTERHUB_SERVICE_URL"], address)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
