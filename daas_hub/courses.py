"""Training courses: what a course is, and the rules around it (docs/instructors.md).

Pure values and functions, no I/O and no JupyterHub: a :class:`Course` read from
its YAML document (the instructor page writes the same format an admin keeps),
the course window, who may manage a course and open whose session, the course's
quota, the temporary accounts' names, one-time sign-in links, and the clean-up
due after the window. :class:`daas_hub.course_book.CourseBook` keeps the files;
the hub pages (:mod:`daas_hub.spawners.courses_page`) do the I/O.

A course's sessions are named servers called ``course-<id>``: the course, never
the participant, decides their profile, resources and material.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .errors import SettingsError
from .options import SessionRequest
from .profiles import parse_memory
from .quotas import GIB, Quota, Usage, available, total
from .schema import validate

#: the named server of a course session: ``course-<course id>``
SERVER_PREFIX = "course-"
#: the role every course participant's account gets in the session (quota role "training")
PARTICIPANT_ROLE = "training"
DEFAULT_SESSION = {"cpu": 1, "memory": "2G", "hours": 8}


def server_name(course_id: str) -> str:
    return f"{SERVER_PREFIX}{course_id}"


def course_of_server(name: str) -> str | None:
    """The course id of a course session's server name, else None."""
    if name and name.startswith(SERVER_PREFIX) and len(name) > len(SERVER_PREFIX):
        return name[len(SERVER_PREFIX):]
    return None


def temporary_name(course_id: str, number: int) -> str:
    """The hub name of a course's ``number``-th temporary account: ``py101-07``."""
    return f"{course_id}-{number:02d}"


def parse_time(text: str) -> datetime:
    """An ISO date-time; one without a zone is UTC."""
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Phase(enum.StrEnum):
    BEFORE = "before"
    OPEN = "open"
    AFTER = "after"


@dataclass(frozen=True)
class Material:
    """A git repository pulled into every course session (nbgitpuller)."""

    url: str
    branch: str = "main"
    folder: str = "course"

    def to_dict(self) -> dict:
        return {"url": self.url, "branch": self.branch, "folder": self.folder}


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    instructors: tuple[str, ...]
    start: datetime
    end: datetime
    profile: str
    participants: tuple[str, ...] = ()
    temporary_accounts: int = 0
    backend: str | None = None
    cpu: int = 1
    memory: int = 2 * GIB
    hours: float = 8
    material: Material | None = None
    quota_written: dict = field(default_factory=dict)

    # -- reading and writing the YAML document
    @classmethod
    def from_dict(cls, d, *, file: str = "(course)") -> Course:
        """The course in ``d`` (a parsed YAML document); :class:`SettingsError` naming the entry."""
        validate(d, "course", file)
        try:
            start, end = parse_time(d["window"]["start"]), parse_time(d["window"]["end"])
        except ValueError as e:
            raise SettingsError(file, "window", f"not a date and time ({e})",
                                'write it as "2026-10-01T09:00:00+02:00"') from None
        if end <= start:
            raise SettingsError(file, "window > end", "the window ends before it starts",
                                "give an end after the start")
        session = {**DEFAULT_SESSION, **d["session"]}
        material = d.get("material")
        course = cls(
            id=d["id"], title=d["title"], instructors=tuple(d["instructors"]),
            start=start, end=end, profile=session["profile"],
            participants=tuple(d.get("participants", ())),
            temporary_accounts=int(d.get("temporary_accounts", 0)),
            backend=session.get("backend"), cpu=int(session["cpu"]), memory=parse_memory(session["memory"]),
            hours=float(session["hours"]),
            material=Material(material["url"], material.get("branch", "main"), material.get("folder", "course"))
            if material else None,
            quota_written=dict(d.get("quota", {})),
        )
        clash = set(course.participants) & set(course.temporary_names())
        if clash:
            raise SettingsError(file, "participants", f"{', '.join(sorted(clash))} is also a temporary account's name",
                                "remove it from participants")
        return course

    def to_dict(self) -> dict:
        d = {
            "id": self.id, "title": self.title, "instructors": list(self.instructors),
            "participants": list(self.participants), "temporary_accounts": self.temporary_accounts,
            "window": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "session": {"profile": self.profile, "cpu": self.cpu, "memory": f"{self.memory / GIB:g}G",
                        "hours": self.hours},
        }
        if self.backend:
            d["session"]["backend"] = self.backend
        if self.material:
            d["material"] = self.material.to_dict()
        if self.quota_written:
            d["quota"] = dict(self.quota_written)
        return d

    # -- who is in it
    def temporary_names(self) -> list[str]:
        return [temporary_name(self.id, i) for i in range(1, self.temporary_accounts + 1)]

    def everyone(self) -> list[str]:
        """Every participant: existing accounts first, then the temporary accounts."""
        return [*self.participants, *self.temporary_names()]

    def has_participant(self, name: str) -> bool:
        return name in self.participants or name in self.temporary_names()

    # -- when
    def phase(self, now: datetime) -> Phase:
        if now < self.start:
            return Phase.BEFORE
        return Phase.OPEN if now < self.end else Phase.AFTER

    def sessions_allowed(self, now: datetime, *, warm_up: timedelta) -> bool:
        """Course sessions may run from ``warm_up`` before the start until the end."""
        return self.start - warm_up <= now < self.end

    # -- how much
    @property
    def quota(self) -> Quota:
        """The course's quota: what it sets, else one session each for every participant."""
        n = len(self.everyone())
        base = Quota(sessions=n, cpu=n * self.cpu, memory=n * self.memory, gpu=0, hours=n * self.hours)
        return Quota.from_dict(self.quota_written, fallback=base, where=f"course {self.id} quota")

    def request(self, backend: str) -> SessionRequest:
        """The session every participant gets."""
        return SessionRequest(proposal=None, profile=self.profile, backend=self.backend or backend,
                              cpu=self.cpu, memory=self.memory, gpu=0, hours=self.hours)


def with_changes(course: Course, **changes) -> Course:
    """A copy of ``course`` with ``changes``, checked again through its document."""
    d = course.to_dict()
    d.update(changes)
    return Course.from_dict(d)


# -- the instructor page's forms
#: what the instructor page's edit form changes of a course (the rest stays as defined)
EDIT_FIELDS = ("title", "start", "end", "participants", "material_url", "branch")


def names_in(text: str) -> list[str]:
    """User names typed in a form field, separated by spaces or commas, first occurrence kept."""
    return list(dict.fromkeys(n for n in text.replace(",", " ").split() if n))


def edited(course: Course, form: dict) -> Course:
    """``course`` with the edit form applied: title, window, participants and material
    (:data:`EDIT_FIELDS`, stripped strings); checked again as a whole, so bad input raises
    :class:`SettingsError` (naming the entry) and nothing half-changed exists. The id,
    instructors, temporary accounts, session and quota stay."""
    d = course.to_dict()
    d["title"] = form["title"]
    d["window"] = {"start": form["start"], "end": form["end"]}
    d["participants"] = names_in(form["participants"])
    if form["material_url"]:
        folder = course.material.folder if course.material else "course"
        d["material"] = {"url": form["material_url"], "branch": form["branch"] or "main", "folder": folder}
    else:
        d.pop("material", None)
    return Course.from_dict(d, file="the edit form")


def edit_form(course: Course) -> dict:
    """The edit form's fields for ``course`` (times in UTC, as the form shows them)."""
    return {"title": course.title, "start": course.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"),
            "end": course.end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"),
            "participants": " ".join(course.participants),
            "material_url": course.material.url if course.material else "",
            "branch": course.material.branch if course.material else "main"}


# -- rules: who may do what
def may_manage(course: Course, name: str, *, admin: bool) -> bool:
    """Instructors of the course and hub admins manage it."""
    return admin or name in course.instructors


def may_open(course: Course, name: str, participant: str, *, admin: bool) -> bool:
    """May ``name`` open ``participant``'s session of ``course``? Only its instructors (or an
    admin), and only a participant of this course."""
    return may_manage(course, name, admin=admin) and course.has_participant(participant) and participant != name


def courses_of(courses: Iterable[Course], name: str) -> list[Course]:
    """The courses ``name`` takes part in."""
    return [c for c in courses if c.has_participant(name)]


def open_course_of(courses: Iterable[Course], name: str, now: datetime, *, warm_up: timedelta) -> Course | None:
    """A course whose window is open (or warming up) that ``name`` takes part in."""
    for c in courses:
        if c.has_participant(name) and c.sessions_allowed(now, warm_up=warm_up):
            return c
    return None


# -- quota
@dataclass(frozen=True)
class StartPlan:
    start: tuple[str, ...]  # participants to start now
    running: tuple[str, ...]  # already running or starting
    refused: tuple[str, ...]  # not started: the course quota is used up
    left: Usage


def start_plan(course: Course, live: Iterable[str], backend: str) -> StartPlan:
    """Whom "start all" starts: participants without a live course session, in order, while
    the course's quota allows one more session (live sessions count first)."""
    live = [n for n in course.everyone() if n in set(live)]
    request = course.request(backend)
    used = total(request for _ in live)
    start, refused = [], []
    for name in course.everyone():
        if name in live:
            continue
        if fits(course.quota, used, request):
            start.append(name)
            used = used.plus(request.cpu, request.memory, request.gpu, request.hours)
        else:
            refused.append(name)
    return StartPlan(tuple(start), tuple(live), tuple(refused), available(course.quota, used))


def fits(quota: Quota, used: Usage, r: SessionRequest) -> bool:
    return (used.sessions + 1 <= quota.sessions and used.cpu + r.cpu <= quota.cpu
            and used.memory + r.memory <= quota.memory and used.gpu + r.gpu <= quota.gpu
            and used.hours + r.hours <= quota.hours)


# -- one-time sign-in links
def new_token() -> str:
    """An unguessable sign-in token (256 bits)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the hub keeps of a token: its SHA-256 (the token itself is only printed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class Link:
    """What the hub keeps about one sign-in link."""

    course: str
    user: str
    expires: datetime
    used: datetime | None = None

    def to_dict(self) -> dict:
        return {"course": self.course, "user": self.user, "expires": self.expires.isoformat(),
                "used": self.used.isoformat() if self.used else None}

    @classmethod
    def from_dict(cls, d: dict) -> Link:
        return cls(d["course"], d["user"], parse_time(d["expires"]), parse_time(d["used"]) if d.get("used") else None)


def link_expiry(course: Course, now: datetime, lifetime: timedelta) -> datetime:
    """A link made ``now`` works for ``lifetime``, and never after the course's end."""
    return min(now + lifetime, course.end)


def link_refusal(link: Link | None, course: Course | None, now: datetime, *, contact: str) -> str | None:
    """Why the link cannot be used now (a sentence), or None if it signs its person in."""
    ask = f"Ask your instructor for a new link, or contact {contact}."
    if link is None or course is None or not course.has_participant(link.user):
        return f"This sign-in link is not valid. {ask}"
    if link.used is not None:
        return f"This sign-in link was already used (each link signs in once). {ask}"
    if course.phase(now) is Phase.AFTER:
        return f"The course \u201c{course.title}\u201d has ended, so its sign-in links no longer work."
    if now >= link.expires:
        return f"This sign-in link has expired. {ask}"
    return None


# -- after the window
@dataclass(frozen=True)
class Cleanup:
    stop: tuple[tuple[str, str], ...]  # (user, server name) of ended courses' live sessions
    remove: tuple[str, ...]  # temporary accounts whose grace period is over


def cleanup_plan(courses: Iterable[Course], live: Iterable[tuple[str, str]], temporary: dict[str, str],
                 now: datetime, *, grace: timedelta) -> Cleanup:
    """What is due at ``now``: stop the sessions of ended courses, and remove the temporary
    accounts (``temporary``: name -> course id) whose course ended more than ``grace`` ago.

    Only temporary accounts are ever removed: a regular participant keeps their account
    and files; a temporary account whose course definition is gone is removed too.
    """
    by_id = {c.id: c for c in courses}
    stop = []
    for user, server in live:
        cid = course_of_server(server)
        course = by_id.get(cid) if cid else None
        if cid and (course is None or course.phase(now) is Phase.AFTER or not course.has_participant(user)):
            stop.append((user, server))
    remove = []
    for name, cid in sorted(temporary.items()):
        course = by_id.get(cid)
        if course is None or now >= course.end + grace:
            remove.append(name)
    return Cleanup(tuple(stop), tuple(remove))


def check_material_url(url: str, prefixes: Iterable[str]) -> str | None:
    """None if ``url`` starts with one of the site's allowed ``prefixes``, else why not."""
    prefixes = list(prefixes)
    if any(url.startswith(p) for p in prefixes if p):
        return None
    if not prefixes:
        return ("this hub takes course material from no repository (the admin sets "
                "CourseBook.material_prefixes)")
    return f"material is taken only from {', '.join(prefixes)}"
