"""The course pages of the hub (docs/instructors.md).

- ``/hub/courses``: the courses a person teaches or takes part in; instructors
  define a new course here.
- ``/hub/courses/<id>``: the instructor page: participants and their session
  state, start all (within the course's quota), stop all, open a participant's
  session, broadcast a message, print the temporary accounts' sign-in sheet, edit
  the course (title, window, participants, material).
- ``/hub/course-login``: a one-time sign-in link (GET shows whom it signs in;
  the button POSTs, so a mail scanner fetching the link does not use it).
- ``/hub/api/daas/courses/cleanup``: an admin runs the clean-up now.

Rules come from :mod:`daas_hub.courses`; files from
:class:`daas_hub.course_book.CourseBook`; sessions from :mod:`.courses`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from tornado import web

from daas_hub.access import make_auth_state, read_auth_state
from daas_hub.course_book import LinkRefused
from daas_hub.courses import (
    EDIT_FIELDS,
    PARTICIPANT_ROLE,
    Course,
    courses_of,
    edit_form,
    edited,
    may_manage,
    may_open,
    names_in,
    server_name,
    start_plan,
)
from daas_hub.errors import SettingsError
from daas_hub.model import Account, UnsafeValue

from .common import policy_for
from .courses import cleanup, course_book_for, describe_window, live_course_servers
from .first_start import FirstStartRefused, account_from_source, lookup_for

MAX_MESSAGE = 2000
#: start-all rounds under way (kept so they are not garbage-collected)
_background: set = set()


class CourseBase(BaseHandler):
    @property
    def book(self):
        book = course_book_for(self.authenticator)
        if book is None:
            raise web.HTTPError(404, "This hub has no courses (CourseBook.courses_dir is not set).")
        return book

    @property
    def contact(self) -> str:
        return policy_for(self.authenticator, self.log).contact

    async def roles_of(self, user) -> frozenset[str]:
        known = read_auth_state(await user.get_auth_state())
        return known[0].roles if known else frozenset()

    def managed(self, course_id: str, user) -> Course:
        course = self.book.course(course_id)
        if course is None or not may_manage(course, user.name, admin=user.admin):
            raise web.HTTPError(404, "There is no such course you teach.")
        return course

    def session_state(self, name: str, course: Course) -> str:
        orm_user = orm.User.find(self.db, name)
        if orm_user is None:
            return "no session"
        user = self.users[orm_user]
        sp = user.spawners.get(server_name(course.id))
        if sp is None or not sp.active:
            return "no session"
        if sp.pending:
            return f"{sp.pending}ing" if sp.pending in ("spawn", "stop") else sp.pending
        return "running" if sp.ready else "starting"

    async def check_names(self, course: Course, participants=None) -> None:
        """Participants (``participants``, default all) must be accounts of the facility;
        temporary names must be nobody's (checked when ``participants`` is None)."""
        lookup = lookup_for(self.authenticator)
        for name in course.participants if participants is None else participants:
            if lookup is not None and await lookup(name) is None:
                raise ValueError(f"{name} is not an account of the facility; add it as a temporary account instead")
        if participants is not None:
            return
        for name in course.temporary_names():
            taken = (lookup is not None and await lookup(name) is not None) or (
                orm.User.find(self.db, name) is not None and not self.book.is_temporary(name))
            if taken:
                raise ValueError(f"the temporary account name {name} belongs to someone already; choose another "
                                 f"course id")


def sentence(e: Exception) -> str:
    """A form's refusal as one sentence (a :class:`SettingsError` names the entry and the fix)."""
    if isinstance(e, SettingsError):
        return f"{e.entry}: {e.problem}. {e.fix[:1].upper()}{e.fix[1:]}."
    return f"{e}."


class CoursesPage(CourseBase):
    """The courses I teach or take part in; instructors define new ones."""

    @web.authenticated
    async def get(self, error: str = "", form: dict | None = None):
        user = self.current_user
        book = self.book
        courses = book.courses()
        teaching = [c for c in courses if may_manage(c, user.name, admin=user.admin)]
        mine = []
        for c in courses_of(courses, user.name):
            mine.append({"course": c, "window": describe_window(c), "phase": c.phase(book.now()).value,
                         "messages": book.messages(c.id), "opened": book.journal(c.id, user.name),
                         "state": self.session_state(user.name, c),
                         "spawn_url": f"{self.hub.base_url}spawn/{user.name}/{server_name(c.id)}",
                         "url": f"{self.base_url}user/{user.name}/{server_name(c.id)}/"})
        may_create = user.admin or "instructor" in await self.roles_of(user)
        now = book.now()
        defaults = {"start": (now + timedelta(days=1)).strftime("%Y-%m-%dT09:00"),
                    "end": (now + timedelta(days=1)).strftime("%Y-%m-%dT17:00"), "profile": "python",
                    "cpu": 1, "memory": "2G", "hours": 8, "temporary": 0, "branch": "main"}
        html = await self.render_template(
            "courses.html", teaching=[(c, describe_window(c)) for c in teaching], mine=mine,
            may_create=may_create, error=error, form={**defaults, **(form or {})},
            material_prefixes=book.material_prefixes)
        self.finish(html)

    @web.authenticated
    async def post(self):
        """Define a course from the form."""
        user = self.current_user
        if not (user.admin or "instructor" in await self.roles_of(user)):
            raise web.HTTPError(403, "Only instructors define courses.")
        form = {k: self.get_body_argument(k, "").strip() for k in (
            "id", "title", "start", "end", "profile", "cpu", "memory", "hours", "participants", "temporary",
            "material_url", "branch")}
        try:
            course = await self._course_from_form(form, user)
        except (SettingsError, ValueError) as e:
            self.set_status(400)
            return await self.get(error=f"The course was not saved: {sentence(e)}", form=form)
        self.log.info("%s defined the course %s (%d participants)", user.name, course.id, len(course.everyone()))
        self.redirect(f"{self.hub.base_url}courses/{course.id}")

    async def _course_from_form(self, form: dict, user) -> Course:
        book = self.book
        if form["id"] and book.course(form["id"]) is not None:
            raise ValueError(f"a course called {form['id']} exists already; choose another id")
        def number(key, kind):
            try:
                return kind(form[key] or 0)
            except ValueError:
                raise ValueError(f"{key} must be a number, not \u201c{form[key][:20]}\u201d") from None
        doc = {
            "id": form["id"], "title": form["title"], "instructors": [user.name],
            "participants": names_in(form["participants"]),
            "temporary_accounts": number("temporary", int),
            "window": {"start": form["start"], "end": form["end"]},
            "session": {"profile": form["profile"], "cpu": number("cpu", int), "memory": form["memory"] or "2G",
                        "hours": number("hours", float)},
        }
        if form["material_url"]:
            doc["material"] = {"url": form["material_url"], "branch": form["branch"] or "main"}
        course = Course.from_dict(doc, file="the course form")
        await self.check_names(course)
        book.save(course)
        return course


class CoursePage(CourseBase):
    """The instructor page of one course."""

    @web.authenticated
    async def get(self, course_id, message: str = "", error: str = "", form: dict | None = None):
        user = self.current_user
        course = self.managed(course_id, user)
        book = self.book
        rows = [{"name": n, "temporary": n in course.temporary_names(), "state": self.session_state(n, course),
                 "url": f"{self.base_url}user/{n}/{server_name(course.id)}/"} for n in course.everyone()]
        live = live_course_servers(self.db, course.id)
        html = await self.render_template(
            "course.html", course=course, window=describe_window(course), phase=course.phase(book.now()).value,
            rows=rows, quota=course.quota, live=len(live), messages=book.messages(course.id),
            journal=book.journal(course.id), message=message, error=error, form=form or edit_form(course),
            material_prefixes=book.material_prefixes)
        self.finish(html)

    @web.authenticated
    async def post(self, course_id):
        user = self.current_user
        course = self.managed(course_id, user)
        action = self.get_body_argument("action", "")
        if action == "start-all":
            return await self.get(course_id, message=await self._start_all(course))
        if action == "stop-all":
            return await self.get(course_id, message=await self._stop_all(course))
        if action == "broadcast":
            text = self.get_body_argument("text", "").strip()
            if not text or len(text) > MAX_MESSAGE:
                self.set_status(400)
                return await self.get(course_id, error=f"Write a message of 1 to {MAX_MESSAGE} characters.")
            self.book.post_message(course, user.name, text)
            return await self.get(course_id, message="Message sent to the course.")
        if action == "edit":
            return await self._edit(course, user)
        if action == "links":
            return await self._sheet(course)
        if action == "open":
            return await self._open(course, user, self.get_body_argument("participant", ""))
        self.set_status(400)
        return await self.get(course_id, error="Unknown action.")

    async def _edit(self, course: Course, user):
        """Save the edit form; bad input: 400, the sentence, the form as typed, the course unchanged."""
        form = {k: self.get_body_argument(k, "").strip() for k in EDIT_FIELDS}
        try:
            new = edited(course, form)
            await self.check_names(new, participants=[n for n in new.participants if n not in course.participants])
            self.book.save(new)
        except (SettingsError, ValueError) as e:
            self.set_status(400)
            return await self.get(course.id, error=f"The course was not changed: {sentence(e)}", form=form)
        gone = [n for n in course.participants if n not in new.participants]
        self.log.info("%s edited the course %s (%d participants)", user.name, course.id, len(new.everyone()))
        said = "The course was saved."
        if gone:
            said += (f" {', '.join(gone)} no longer take{'s' if len(gone) == 1 else ''} part: a running course "
                     f"session of theirs is stopped by the next clean-up (within a minute).")
        return await self.get(course.id, message=said)

    async def _start_all(self, course: Course) -> str:
        book = self.book
        if not course.sessions_allowed(book.now(), warm_up=book.warm_up_delta):
            return f"Not started: the course's sessions may start from {book.warm_up:g} minutes before its window ({describe_window(course)})."
        plan = start_plan(course, live_course_servers(self.db, course.id), backend="local")
        name = server_name(course.id)

        limit = asyncio.Semaphore(book.start_concurrency)

        async def one(participant):
            async with limit:  # a few at a time: a class of 50 does not start 50 JupyterLabs at once
                user = self.user_from_username(participant)
                try:
                    await self._known(user, book)
                    create = getattr(user, "get_or_create_spawner", None)  # JupyterHub 6; 5.5 creates on access
                    spawner = create(name, name, replace_failed=True) if create else user.spawners[name]
                    await self.spawn_single_user(user, name, options={})
                    if spawner._spawn_future is not None:
                        await spawner._spawn_future
                except Exception as e:  # noqa: BLE001 - one participant's failure does not stop the others
                    self.log.warning("Start all (%s): %s's session did not start: %s", course.id, participant,
                                     getattr(e, "jupyterhub_message", None) or e)

        task = asyncio.ensure_future(asyncio.gather(*(one(p) for p in plan.start)))
        _background.add(task)
        task.add_done_callback(_background.discard)
        said = f"Starting {len(plan.start)} sessions; {len(plan.running)} were running already."
        if plan.refused:
            said += (f" Not started: {', '.join(plan.refused)} (the course's quota allows "
                     f"{course.quota.sessions} sessions at once).")
        self.log.info("Start all for course %s: %s", course.id, said)
        return said

    async def _known(self, user, book) -> None:
        """Give a participant who never signed in their auth_state, as their first start would
        (a temporary account: its course role; an account: from the proposal source)."""
        if await user.get_auth_state() is not None:
            return
        if book.is_temporary(user.name):
            account = Account(username=user.name, roles=frozenset({PARTICIPANT_ROLE}))
            await user.save_auth_state(make_auth_state(account, []))
            return
        lookup = lookup_for(self.authenticator)
        if lookup is not None:
            try:
                await account_from_source(user, lookup, policy_for(self.authenticator, self.log), state=None,
                                          log=self.log, manage_groups=False)
            except FirstStartRefused as e:
                raise RuntimeError(e.message) from None

    async def _stop_all(self, course: Course) -> str:
        name = server_name(course.id)
        stopping = []
        for participant in live_course_servers(self.db, course.id):
            user = self.users[orm.User.find(self.db, participant)]
            sp = user.spawners.get(name)
            if sp is not None and sp.active and not sp.pending:
                stopping.append(self.stop_single_user(user, name))
        await asyncio.gather(*stopping, return_exceptions=True)
        self.log.info("Stop all for course %s: %d sessions", course.id, len(stopping))
        return f"Stopping {len(stopping)} sessions."

    async def _sheet(self, course: Course):
        tokens = self.book.issue_links(course)
        base = f"{self.request.protocol}://{self.request.host}{self.hub.base_url}course-login?token="
        links = [{"name": n, "url": base + t} for n, t in sorted(tokens.items())]
        html = await self.render_template("course_sheet.html", course=course, window=describe_window(course),
                                          links=links, lifetime=self.book.link_lifetime)
        self.set_header("Cache-Control", "no-store")
        self.finish(html)

    async def _open(self, course: Course, instructor, participant: str):
        if not may_open(course, instructor.name, participant, admin=instructor.admin):
            self.set_status(403)
            return await self.get(course.id, error=f"{participant} is not a participant of this course.")
        orm_user = orm.User.find(self.db, participant)
        sp = self.users[orm_user].spawners.get(server_name(course.id)) if orm_user else None
        if sp is None or not sp.active:
            self.set_status(409)
            return await self.get(course.id, error=f"{participant} has no running course session to open.")
        # scoped to this one course session (a JupyterHub share): it ends when the session stops
        orm.Share.grant(self.db, sp.orm_spawner, instructor.orm_user)
        self.book.note_opened(course, instructor.name, participant)
        self.log.info("Instructor %s opened %s's session of course %s", instructor.name, participant, course.id)
        self.redirect(f"{self.base_url}user/{participant}/{server_name(course.id)}/")


class CourseSignIn(BaseHandler):
    """A one-time sign-in link of a temporary account."""

    def _book(self):
        book = course_book_for(self.authenticator)
        if book is None:
            raise web.HTTPError(404, "This hub has no courses.")
        return book

    async def get(self):
        token = self.get_query_argument("token", "")
        contact = policy_for(self.authenticator, self.log).contact
        try:
            course, name = self._book().peek(token, contact=contact)
        except LinkRefused as e:
            self.set_status(403)
            return self.finish(await self.render_template("course_login.html", error=e.message, token="",
                                                          course=None, account=""))
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(await self.render_template("course_login.html", error="", token=token, course=course, account=name))

    async def post(self):
        token = self.get_body_argument("token", "")
        book = self._book()
        contact = policy_for(self.authenticator, self.log).contact
        try:
            course, name = book.redeem(token, contact=contact)
            account = Account(username=name, roles=frozenset({PARTICIPANT_ROLE}),
                              display_name=f"{course.title} participant")
        except (LinkRefused, UnsafeValue) as e:
            self.set_status(403)
            message = e.message if isinstance(e, LinkRefused) else "This sign-in link is not valid."
            return self.finish(await self.render_template("course_login.html", error=message, token="",
                                                          course=None, account=""))
        user = self.user_from_username(name)
        await user.save_auth_state(make_auth_state(account, []))
        self.set_login_cookie(user)
        self.log.info("Temporary account %s of course %s signed in with its one-time link", name, course.id)
        self.redirect(f"{self.hub.base_url}courses")


class CourseCleanupAPI(APIHandler):
    """POST: an admin runs the clean-up now (it also runs every minute)."""

    @web.authenticated
    async def post(self):
        user = self.current_user
        if not getattr(user, "admin", False) and not self.has_scope("admin:users"):
            raise web.HTTPError(403, "Only admins run the course clean-up.")
        book = course_book_for(self.authenticator)
        if book is None:
            raise web.HTTPError(404, "This hub has no courses.")
        self.write(await cleanup(_App(self), book))


class _App:
    """What :func:`cleanup` needs of the hub, from a handler."""

    def __init__(self, handler):
        self.db = handler.db
        self.users = handler.users
        self.proxy = handler.proxy

