"""The hub's courses on disk: definitions (YAML) and what happened (links, accounts, messages).

:class:`CourseBook` is configured like every daas-hub part (traitlets) and owned by
the login (:class:`~daas_hub.authenticators.mapping.ProposalMapping`), because it
decides who signs in with a course link and until when. It keeps:

- ``<courses_dir>/<id>.yaml``: one course each, the format of docs/instructors.md;
  the instructor page writes these files, an admin may write or edit them too;
- ``<courses_dir>/state.json`` (mode 0600): the temporary accounts made, the sign-in
  links' SHA-256 digests (never the links), the messages sent and the journal of
  instructors opening participants' sessions.

No JupyterHub imports; the rules themselves are in :mod:`daas_hub.courses`.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from traitlets import Float, Int, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable
from traitlets.utils.importstring import import_item

from .courses import (
    Course,
    Link,
    cleanup_plan,
    link_expiry,
    link_refusal,
    new_token,
    token_digest,
)
from .errors import SettingsError
from .schema import read_yaml

STATE_FILE = "state.json"


class LinkRefused(Exception):
    """A sign-in link that cannot be used; ``message`` is the sentence the person reads."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class CourseBook(LoggingConfigurable):
    """The courses of this hub, and the rules of their temporary accounts and links."""

    courses_dir = Unicode(
        "",
        config=True,
        help="""Folder of the course definitions (``<id>.yaml``, docs/instructors.md) and
        of their state (``state.json``). The instructor page writes here; an admin may
        add or edit files, which the hub reads again when they change. Empty: no courses.
        ``daas-hub`` sets it to ``<hub data_dir>/courses``.

        Example: ``"/var/lib/daas-hub/courses"``

        .. versionadded:: 0.2
        """,
    )

    grace_period = Float(
        168,
        config=True,
        help="""Hours after a course's end before its temporary accounts are removed, with
        their home folders. Until then they cannot sign in, but their files stay (e.g. for
        an instructor to collect). Regular participants are never removed.

        Example: ``24`` (one day)

        .. versionadded:: 0.2
        """,
    )

    link_lifetime = Float(
        72,
        config=True,
        help="""Hours a one-time sign-in link works after it is printed; never after the
        course's end. Example: ``12``

        .. versionadded:: 0.2
        """,
    )

    warm_up = Float(
        120,
        config=True,
        help="""Minutes before a course's start from which its sessions may start
        ("start all" warms them up before class). Example: ``30``

        .. versionadded:: 0.2
        """,
    )

    material_prefixes = List(
        Unicode(),
        config=True,
        help="""URL prefixes course material may come from (git repositories of the facility).
        A course whose material URL starts with none of them is refused when it is saved.
        Empty (the default): courses have no material.

        Example: ``["https://git.facility.example/training/"]``

        .. versionadded:: 0.2
        """,
    )

    temporary_run_as = Unicode(
        "",
        config=True,
        help="""The unprivileged system account temporary participants' sessions run as.
        Temporary accounts have no account on the machine; empty (the default): the
        backend's ``run_as`` (the demo's ``daas-demo``). If neither is set, a temporary
        participant's session is refused with a message. Each session still gets its own
        home under the backend's ``home_root``. See docs/instructors.md ("Where sessions run").

        Example: ``"daas-training"``

        .. versionadded:: 0.2
        """,
    )

    start_concurrency = Int(
        4,
        config=True,
        help="""How many sessions "start all" starts at the same time; the others wait their turn,
        so a large class does not overload the machine (each start still has the spawner's
        ``http_timeout`` to answer). Example: ``10``

        .. versionadded:: 0.2
        """,
    )

    max_temporary = Int(
        200,
        config=True,
        help="""The most temporary accounts one course may have.

        .. versionadded:: 0.2
        """,
    )

    clock = Unicode(
        "time.time",
        config=True,
        help="""Import path of the clock courses are timed by: a function returning the
        time in seconds since the epoch. Only tests change it (to move through a course's
        window and grace period without waiting).

        .. versionadded:: 0.2
        """,
    )

    @validate("clock")
    def _check_clock(self, proposal):
        try:
            fn = import_item(proposal.value)
        except (ImportError, ValueError) as e:
            raise ValueError(f"CourseBook.clock: cannot import {proposal.value!r} ({e})") from None
        if not callable(fn):
            raise ValueError(f"CourseBook.clock: {proposal.value!r} is not a function")
        return proposal.value

    @default("log")
    def _default_log(self):
        import logging

        return logging.getLogger("daas_hub.courses")

    _cache: dict | None = None  # path -> (mtime, Course | SettingsError)

    # -- time
    def now(self) -> datetime:
        fn = time.time if self.clock == "time.time" else import_item(self.clock)
        return datetime.fromtimestamp(fn(), UTC)

    @property
    def grace(self) -> timedelta:
        return timedelta(hours=self.grace_period)

    @property
    def warm_up_delta(self) -> timedelta:
        return timedelta(minutes=self.warm_up)

    # -- definitions
    @property
    def enabled(self) -> bool:
        return bool(self.courses_dir)

    def _dir(self) -> Path:
        path = Path(self.courses_dir)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def courses(self) -> list[Course]:
        """Every readable course; a broken file is logged (once per change) and left out."""
        if not self.enabled:
            return []
        if self._cache is None:
            self._cache = {}
        out = []
        for path in sorted(self._dir().glob("*.yaml")):
            mtime = path.stat().st_mtime_ns
            cached = self._cache.get(path)
            if cached is None or cached[0] != mtime:
                try:
                    course = Course.from_dict(read_yaml(path, what="course", fix_missing=""), file=str(path))
                    if course.id != path.stem:
                        raise SettingsError(path, "id", f"the id {course.id!r} differs from the file name",
                                            f"name the file {course.id}.yaml")
                except SettingsError as e:
                    self.log.error("Course file left out: %s", e)
                    course = e
                cached = self._cache[path] = (mtime, course)
            if isinstance(cached[1], Course):
                out.append(cached[1])
        return out

    def course(self, course_id: str) -> Course | None:
        return next((c for c in self.courses() if c.id == course_id), None)

    def save(self, course: Course) -> None:
        """Write ``course`` (checked) to its file, replacing it atomically."""
        problem = self.material_problem(course)
        if problem:
            raise SettingsError(f"{course.id}.yaml", "material > url", problem,
                                "use a repository of the facility, or leave the material out")
        if course.temporary_accounts > self.max_temporary:
            raise SettingsError(f"{course.id}.yaml", "temporary_accounts",
                                f"{course.temporary_accounts} is more than this hub allows",
                                f"at most {self.max_temporary} (CourseBook.max_temporary)")
        import yaml

        _write_atomic(self._dir() / f"{course.id}.yaml",
                      "# A daas-hub course (docs/instructors.md).\n" + yaml.safe_dump(course.to_dict(), sort_keys=False))
        for name in course.temporary_names():
            self._record_temporary(name, course.id)

    def material_problem(self, course: Course) -> str | None:
        from .courses import check_material_url

        if course.material is None:
            return None
        return check_material_url(course.material.url, self.material_prefixes)

    # -- state
    def _state_path(self) -> Path:
        return self._dir() / STATE_FILE

    def state(self) -> dict:
        try:
            data = json.loads(self._state_path().read_text())
        except FileNotFoundError:
            data = {}
        for key in ("links", "temporary", "messages", "journal"):
            data.setdefault(key, {})
        return data

    def _save_state(self, data: dict) -> None:
        _write_atomic(self._state_path(), json.dumps(data, indent=1, sort_keys=True))

    def _record_temporary(self, name: str, course_id: str) -> None:
        data = self.state()
        if name not in data["temporary"]:
            data["temporary"][name] = course_id
            self._save_state(data)

    def temporary(self) -> dict[str, str]:
        """Temporary accounts not yet removed: name -> course id."""
        return dict(self.state()["temporary"])

    def is_temporary(self, name: str) -> bool:
        return name in self.state()["temporary"]

    def temporary_course(self, name: str) -> Course | None:
        """The course of a temporary account, while the account may be used (until the end)."""
        cid = self.state()["temporary"].get(name)
        course = self.course(cid) if cid else None
        if course is None or not course.has_participant(name) or self.now() >= course.end:
            return None
        return course

    def forget_temporary(self, name: str) -> None:
        """After removal: the account and its links are gone."""
        data = self.state()
        data["temporary"].pop(name, None)
        data["links"] = {d: link for d, link in data["links"].items() if link["user"] != name}
        self._save_state(data)

    # -- links
    def issue_links(self, course: Course, names: list[str] | None = None) -> dict[str, str]:
        """New one-time links for the course's temporary accounts (or ``names`` of them):
        name -> token. Earlier unused links of those accounts stop working."""
        names = [n for n in (names or course.temporary_names()) if n in course.temporary_names()]
        now = self.now()
        expires = link_expiry(course, now, timedelta(hours=self.link_lifetime))
        data = self.state()
        data["links"] = {d: link for d, link in data["links"].items()
                         if not (link["user"] in names and link["course"] == course.id and not link.get("used"))}
        tokens = {}
        for name in names:
            token = new_token()
            data["links"][token_digest(token)] = Link(course.id, name, expires).to_dict()
            data["temporary"].setdefault(name, course.id)
            tokens[name] = token
        self._save_state(data)
        self.log.info("Printed %d sign-in links for course %s (valid until %s)", len(tokens), course.id,
                      expires.isoformat())
        return tokens

    def peek(self, token: str, *, contact: str) -> tuple[Course, str]:
        """The course and account a link is for, if it can be used now; else :class:`LinkRefused`."""
        link, course = self._find(token)
        refusal = link_refusal(link, course, self.now(), contact=contact)
        if refusal:
            raise LinkRefused(refusal)
        return course, link.user

    def redeem(self, token: str, *, contact: str) -> tuple[Course, str]:
        """Use a link: mark it used (it never works again) and return its course and account."""
        course, name = self.peek(token, contact=contact)
        data = self.state()
        digest = token_digest(token)
        data["links"][digest]["used"] = self.now().isoformat()
        self._save_state(data)
        return course, name

    def _find(self, token: str) -> tuple[Link | None, Course | None]:
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            return None, None
        entry = self.state()["links"].get(token_digest(token))
        if entry is None:
            return None, None
        link = Link.from_dict(entry)
        return link, self.course(link.course)

    # -- messages and journal
    def post_message(self, course: Course, by: str, text: str) -> None:
        data = self.state()
        data["messages"].setdefault(course.id, []).append({"at": self.now().isoformat(), "by": by, "text": text})
        self._save_state(data)

    def messages(self, course_id: str) -> list[dict]:
        return list(self.state()["messages"].get(course_id, []))

    def note_opened(self, course: Course, instructor: str, participant: str) -> None:
        data = self.state()
        data["journal"].setdefault(course.id, []).append(
            {"at": self.now().isoformat(), "instructor": instructor, "participant": participant})
        self._save_state(data)

    def journal(self, course_id: str, participant: str | None = None) -> list[dict]:
        entries = self.state()["journal"].get(course_id, [])
        return [e for e in entries if participant is None or e["participant"] == participant]

    # -- after the window
    def cleanup(self, live: list[tuple[str, str]]):
        """:func:`daas_hub.courses.cleanup_plan` for now."""
        return cleanup_plan(self.courses(), live, self.temporary(), self.now(), grace=self.grace)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
