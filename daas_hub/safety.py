"""Checks that keep a hostile or careless value from reaching the file system.

Pure functions over ``os.lstat`` results: each returns None when the path is
safe to use, or a sentence for the admin's log saying what is wrong and the
fix. The spawners turn a problem into a refusal the person can read
(:func:`daas_hub.spawners.common.refuse_logged`).
"""

from __future__ import annotations

import os
import stat


def home_root_problem(path: str, *, hub_uid: int) -> str | None:
    """``home_root`` must be a real folder owned by root (or the hub's account), writable by no one else.

    Otherwise whoever owns or can write it could plant a folder (or a link) where the
    next session's home is made, and read or replace that person's files.
    """
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"home_root {path} cannot be used ({e.strerror}); create it (owned by root, mode 0755)"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"home_root {path} is not a folder (a link or a file); make it a real folder owned by root, mode 0755"
    if st.st_uid not in (0, hub_uid):
        return (f"home_root {path} is owned by uid {st.st_uid}, not root; "
                f"`chown root: {path}` (its owner could take over every home in it)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"home_root {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"`chmod 0755 {path}`")
    return None


def home_problem(path: str, *, uid: int) -> str | None:
    """An existing session home must be a real folder of the session's account, writable by it alone."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"home {path} cannot be used ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return f"home {path} is a symbolic link; remove it (the hub makes the folder itself)"
    if not stat.S_ISDIR(st.st_mode):
        return f"home {path} is not a folder; remove it (the hub makes the folder itself)"
    if st.st_uid != uid:
        return (f"home {path} is owned by uid {st.st_uid}, not the session's account (uid {uid}); "
                f"check whose files these are before changing the owner")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"home {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); `chmod 0700 {path}`"
    return None


def session_account_problem(*, hub_euid: int, hub_user: str, session_user: str) -> str | None:
    """Without root the hub cannot switch accounts: only sessions meant to run as the hub's own
    account (the demo's choice, ``run_as`` = the hub's account) may start."""
    if hub_euid == 0 or session_user == hub_user:
        return None
    return (f"the hub runs as {hub_user}, not root, so it cannot start a session as {session_user}; "
            f"run the hub as root (docs/security.md)")
