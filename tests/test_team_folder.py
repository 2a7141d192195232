"""A proposal's processed folder is really shared by its team.

Real POSIX accounts and a real group, made for the test (root needed): two team
members and one outsider run the real ``daas-hub-session`` (the program every
backend starts the session with) with the environment the spawners give it, and
write into a setgid folder of the proposal's group, as sessions do.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_world_dir

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making test accounts needs root")


@pytest.fixture
def team():
    tag = secrets.token_hex(3)
    group, names = f"dt{tag}-mx", {who: f"dt{tag}-{who}" for who in ("ann", "ben", "cid")}
    folder = make_world_dir("daas-hub-team-")
    subprocess.run(["groupadd", group], check=True)
    try:
        for who, name in names.items():
            home = folder / who
            subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh",
                            *(["--groups", group] if who != "cid" else []), name], check=True)
            home.mkdir(mode=0o700)
            shutil.chown(home, name, name)
        processed = folder / "processed"
        processed.mkdir()
        shutil.chown(processed, "root", group)
        processed.chmod(0o2770)  # what the facility's storage gives a proposal: setgid, the team's group
        yield folder, names, group, processed
    finally:
        for name in names.values():
            subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def as_session(folder: Path, user: str, who: str, script: str, *, umask: str | None = "0007"):
    """``script`` run by daas-hub-session as ``user``, with the spawners' session environment."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(folder / who), "USER": user}
    if umask is not None:
        env["DAAS_HUB_UMASK"] = umask
    return subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--",
         str(BIN / "daas-hub-session"), "sh", "-c", script],
        cwd=folder, env=env, capture_output=True, text=True, timeout=30,
    )


def test_team_members_change_each_others_files_and_an_outsider_cannot(team):
    folder, names, group, processed = team
    ann = as_session(folder, names["ann"], "ann",
                     "echo first > processed/notes.txt && mkdir processed/fits && echo a > processed/fits/a.dat")
    assert ann.returncode == 0, ann.stderr
    notes = processed / "notes.txt"
    assert oct(notes.stat().st_mode & 0o777) == "0o660" and notes.group() == group
    assert oct((processed / "fits").stat().st_mode & 0o7777) == "0o2770"  # new folders stay the team's

    ben = as_session(folder, names["ben"], "ben",
                     "echo second >> processed/notes.txt && rm processed/fits/a.dat && echo b > processed/fits/b.dat")
    assert ben.returncode == 0, ben.stderr
    assert notes.read_text() == "first\nsecond\n"
    assert sorted(p.name for p in (processed / "fits").iterdir()) == ["b.dat"]

    cid = as_session(folder, names["cid"], "cid", "cat processed/notes.txt")
    assert cid.returncode != 0 and "Permission denied" in cid.stderr
    cid = as_session(folder, names["cid"], "cid", "echo x > processed/mine.txt")
    assert cid.returncode != 0 and not (processed / "mine.txt").exists()


@pytest.mark.parametrize("umask, mode", [
    pytest.param(None, "0o660", id="unset: the default 0007"),
    pytest.param("0027", "0o640", id="a site that wants read-only teammates"),
    pytest.param("0000", "0o664", id="others never get write"),
    pytest.param("rw-all", "0o660", id="garbage: the default"),
])
def test_the_session_umask(team, umask, mode):
    folder, names, _, processed = team
    run = as_session(folder, names["ann"], "ann", "echo x > processed/f", umask=umask)
    assert run.returncode == 0, run.stderr
    assert oct((processed / "f").stat().st_mode & 0o777) == mode


def test_a_umask_that_is_not_octal_is_a_settings_error():
    from daas_hub.spawners.local import LocalSpawner

    with pytest.raises(ValueError, match='LocalSpawner.umask must be an octal mask such as "0007"'):
        LocalSpawner(umask="u=rwx")
    assert LocalSpawner().umask == "0007"
