"""The embedded demo: a small sample facility on this machine.

:func:`ensure_demo_site` writes, in one folder: ``site.yaml`` (the settings),
``proposals.yaml`` (six accounts, five proposals on three beamlines: one shared by
two users, one archived, one embargoed), real HDF5/NeXus sample data (a
diffraction image stack with its pyFAI geometry, XRF maps, tomography
projections), per-user homes and the hub's own files. Started as root, it
creates the unprivileged account ``daas-demo`` that runs every session.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import yaml

DEMO_ACCOUNT = "daas-demo"
#: bump when the generated site changes shape, to regenerate old demo folders
SITE_VERSION = 2
#: the demo's sample course, taught by ivan: carol (an existing account) and three
#: temporary participants; its material is a git repository in the demo folder
COURSE_ID = "py101"
COURSE_TEMPORARY = 3

ACCOUNTS = [
    {"username": "alice", "uid": 21001, "gid": 21001, "display_name": "Alice Ayrton",
     "email": "alice@demo.invalid", "umbrella_id": "umbrella-alice-0001"},
    {"username": "bob", "uid": 21002, "gid": 21002, "display_name": "Bob Bragg",
     "email": "bob@demo.invalid", "umbrella_id": "umbrella-bob-0002"},
    {"username": "carol", "uid": 21003, "gid": 21003, "display_name": "Carol Compton",
     "email": "carol@demo.invalid"},
    {"username": "dave", "uid": 21004, "gid": 21004, "display_name": "Dave Debye (beamline scientist)",
     "email": "dave@demo.invalid", "roles": ["staff", "admin"]},
    {"username": "erin", "uid": 21005, "gid": 21005, "display_name": "Erin Ewald (no proposal yet)",
     "email": "erin@demo.invalid"},
    {"username": "ivan", "uid": 21006, "gid": 21006, "display_name": "Ivan Ising (course instructor)",
     "email": "ivan@demo.invalid", "roles": ["instructor"]},
]

PROPOSALS = [
    {"id": "MX-1001", "title": "In situ powder diffraction of battery cathodes", "instrument": "ID11",
     "state": "active",
     "members": [{"username": "alice", "role": "pi"}, {"username": "bob", "role": "member"},
                 {"username": "dave", "role": "local-contact"}],
     "beamtimes": [{"start": "2026-11-02T08:00:00", "end": "2026-11-05T08:00:00"}],
     "data": {"raw": "data/id11/MX-1001/raw", "processed": "data/id11/MX-1001/processed"}},
    {"id": "EC-2002", "title": "XRF mapping of corroded bronze", "instrument": "ID21",
     "state": "active",
     "members": [{"username": "bob", "role": "pi"}],
     "beamtimes": [{"start": "2026-10-14T08:00:00", "end": "2026-10-16T08:00:00"}],
     "data": {"raw": "data/id21/EC-2002/raw", "processed": "data/id21/EC-2002/processed"}},
    {"id": "HC-3003", "title": "Thermal expansion of zeolites (2021)", "instrument": "ID11",
     "state": "archived",
     "members": [{"username": "carol", "role": "pi"}, {"username": "alice", "role": "member"}],
     "beamtimes": [{"start": "2021-03-01T08:00:00", "end": "2021-03-03T08:00:00"}],
     "data": {"raw": "data/id11/HC-3003/raw", "processed": "data/id11/HC-3003/processed"}},
    {"id": "LS-4004", "title": "Tomography of fossil teeth", "instrument": "BM05",
     "state": "embargoed",
     "members": [{"username": "carol", "role": "pi"}],
     "beamtimes": [{"start": "2026-06-10T08:00:00", "end": "2026-06-12T08:00:00"}],
     "data": {"raw": "data/bm05/LS-4004/raw", "processed": "data/bm05/LS-4004/processed"}},
    {"id": "IH-5005", "title": "Trace elements in historic pigments", "instrument": "ID21",
     "state": "active",
     "members": [{"username": "alice", "role": "pi"}, {"username": "dave", "role": "local-contact"}],
     "beamtimes": [{"start": "2026-11-20T08:00:00", "end": "2026-11-22T08:00:00"}],
     "data": {"raw": "data/id21/IH-5005/raw", "processed": "data/id21/IH-5005/processed"}},
]


def site_settings(hub_url: str) -> dict:
    return {
        "demo": True,
        "facility": {
            "name": "DEMO Light Source",
            "contact": "the DEMO User Office (useroffice@demo.invalid)",
            "data_portal_url": "https://data.demo.invalid",
        },
        "proposal_source": {"kind": "yaml", "path": "proposals.yaml"},
        "profiles": {"enabled": ["python", "diffraction", "spectroscopy"]},
        "login": {"kind": "demo"},
        "spawner": {"backend": "local", "local": {"run_as": DEMO_ACCOUNT, "home_root": "homes"}},
        "hub": {"url": hub_url, "data_dir": "hub"},
    }


def ensure_account(name: str = DEMO_ACCOUNT) -> pwd.struct_passwd | None:
    """Create the unprivileged session account (as root); None when not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/bin/bash", "--comment", "daas-hub demo sessions", name],
        check=True,
    )
    return pwd.getpwnam(name)


def ensure_demo_site(folder: str | Path, *, hub_url: str = "http://127.0.0.1:8000", force: bool = False) -> Path:
    """Generate the demo site in ``folder`` unless it is already there; return site.yaml.

    The settings file is written every time, so a new ``hub_url`` takes effect on
    an existing demo folder; the data is only written when missing or outdated.
    """
    folder = Path(folder).resolve()
    settings_file = folder / "site.yaml"
    stamp = folder / ".daas-hub-demo"
    current = stamp.exists() and stamp.read_text().strip() == str(SITE_VERSION)
    if force or not current:
        generate(folder, hub_url=hub_url)
    else:
        _write_settings(folder, hub_url)
    return settings_file


def _write_yaml(path: Path, data: dict, header: str) -> None:
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=100))


def _write_settings(folder: Path, hub_url: str) -> None:
    _write_yaml(folder / "site.yaml", site_settings(hub_url),
                "# daas-hub demo site settings (docs/settings.md). Generated by `daas-hub demo`.\n")


def generate(folder: Path, *, hub_url: str) -> None:
    account = ensure_account()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # session accounts traverse it to their homes and data
    for parent in folder.parents:
        if parent == Path("/"):
            break
        if os.stat(parent).st_mode & 0o001 == 0 and os.geteuid() == 0:
            raise RuntimeError(
                f"{parent} cannot be entered by other users, so demo sessions could not reach "
                f"{folder}. Choose a demo folder under a world-searchable path (e.g. /var/lib/daas-hub)."
            )
    _write_settings(folder, hub_url)
    _write_yaml(folder / "proposals.yaml",
                {"facility": "DEMO Light Source", "accounts": ACCOUNTS, "proposals": PROPOSALS},
                "# The demo facility's accounts and proposals (docs/proposals.md).\n")
    (folder / "hub").mkdir(mode=0o700, exist_ok=True)
    homes = folder / "homes"
    homes.mkdir(mode=0o755, exist_ok=True)
    write_sample_data(folder)
    for p in PROPOSALS:
        if p["state"] == "archived":
            continue  # archived: nothing left on the online storage
        processed = folder / p["data"]["processed"]
        processed.mkdir(parents=True, exist_ok=True)
        processed.chmod(0o2775)
        if account is not None:
            os.chown(processed, account.pw_uid, account.pw_gid)
    write_sample_course(folder)
    (folder / ".daas-hub-demo").write_text(str(SITE_VERSION))


def write_sample_data(folder: Path) -> None:
    """Small but real HDF5/NeXus files (a few MB in all), made with a fixed seed."""
    from . import sampledata

    id11 = folder / "data/id11/MX-1001/raw"
    id21 = folder / "data/id21/EC-2002/raw"
    ih = folder / "data/id21/IH-5005/raw"
    bm05 = folder / "data/bm05/LS-4004/raw"
    for d in (id11, id21, ih, bm05):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
        for old in d.iterdir():  # read-only files from an earlier run
            old.unlink()
    sampledata.diffraction_stack(id11 / "cathode_scan0001.h5", frames=8)
    sampledata.poni_file(id11 / "geometry.poni")
    sampledata.xrf_map(id21 / "bronze_xrf_map0001.h5", seed=2)
    sampledata.xrf_map(ih / "pigment_xrf_map0001.h5", seed=5)
    sampledata.tomo_projections(bm05 / "tooth_projections.h5")
    for d in (id11, id21, ih, bm05):
        d.chmod(0o755)
        for f in d.iterdir():
            f.chmod(0o444)  # raw data is read-only, even for its owner


SAMPLE_NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {},
         "source": ["# Python for beamline data\n", "Run the cell below, then open your proposal data."]},
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
         "source": ["import numpy as np\n", "np.linspace(0, 1, 5)"]},
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def write_material_repo(repo: Path, files: dict[str, str]) -> None:
    """A bare git repository ``repo`` whose branch ``main`` holds ``files`` (one commit)."""
    import json
    import tempfile

    env = {**os.environ, "GIT_AUTHOR_NAME": "daas-hub demo", "GIT_AUTHOR_EMAIL": "demo@demo.invalid",
           "GIT_COMMITTER_NAME": "daas-hub demo", "GIT_COMMITTER_EMAIL": "demo@demo.invalid"}
    with tempfile.TemporaryDirectory() as work:
        run = lambda *a, cwd=work: subprocess.run(["git", *a], cwd=cwd, env=env, check=True,  # noqa: E731
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run("init", "-q", "-b", "main")
        for name, text in files.items():
            (Path(work) / name).write_text(text if isinstance(text, str) else json.dumps(text, indent=1))
        run("add", ".")
        run("commit", "-q", "-m", "Course material")
        if repo.exists():
            import shutil

            shutil.rmtree(repo)
        repo.parent.mkdir(parents=True, exist_ok=True)
        run("clone", "-q", "--bare", work, str(repo), cwd=str(repo.parent))
    for path in [repo, *repo.rglob("*")]:  # session accounts read it
        path.chmod(0o755 if path.is_dir() else 0o644)


def write_sample_course(folder: Path) -> None:
    """ivan's course ``py101``: open for 30 days from the demo's generation, erin and three
    temporary participants, material pulled from ``material/intro-python.git``."""
    from datetime import UTC, datetime, timedelta

    repo = folder / "material" / "intro-python.git"
    write_material_repo(repo, {"01-first-steps.ipynb": SAMPLE_NOTEBOOK,
                               "README.md": "Material of the demo course py101.\n"})
    (folder / "material").chmod(0o755)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    course = {
        "id": COURSE_ID, "title": "Python for beamline data (demo course)", "instructors": ["ivan"],
        "participants": ["carol"], "temporary_accounts": COURSE_TEMPORARY,
        "window": {"start": start.isoformat(), "end": (start + timedelta(days=30)).isoformat()},
        "session": {"profile": "python", "cpu": 1, "memory": "2G", "hours": 4},
        "material": {"url": f"file://{repo}", "branch": "main", "folder": "course"},
    }
    courses = folder / "hub" / "courses"
    courses.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_yaml(courses / f"{COURSE_ID}.yaml", course,
                "# The demo's sample course (docs/instructors.md). Generated by `daas-hub demo`.\n")
