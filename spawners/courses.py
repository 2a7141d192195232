"""Course sessions on the hub: what a ``course-<id>`` server runs, and the clean-up after a course.

The rules are pure (:mod:`daas_hub.courses`); this module reads the hub's state
(auth_state, the database's live servers) and acts (stop servers, remove
temporary accounts and their homes). The course, never the participant's
options, decides a course session's profile, resources and material.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from jupyterhub import orm
from tornado.ioloop import PeriodicCallback

from daas_hub.access import read_auth_state
from daas_hub.course_book import CourseBook
from daas_hub.courses import PARTICIPANT_ROLE, Course, course_of_server, fits, server_name
from daas_hub.model import Account
from daas_hub.quotas import total

from .common import SessionOrder, refuse
from .first_start import FirstStartRefused, account_from_source, lookup_for

#: seconds between two clean-up rounds (ended courses' sessions, expired temporary accounts)
CLEANUP_INTERVAL = 60


def course_book_for(authenticator) -> CourseBook | None:
    """The login's course book (every daas-hub login publishes ``course_book``), or None."""
    book = getattr(authenticator, "course_book", None)
    return book if isinstance(book, CourseBook) and book.enabled else None


def live_course_servers(db, course_id: str) -> list[str]:
    """Names of the users whose ``course-<id>`` server is running or starting."""
    rows = (db.query(orm.Spawner).filter(orm.Spawner.name == server_name(course_id))
            .filter(orm.Spawner.server_id.isnot(None)).all())
    return sorted(r.user.name for r in rows)


def describe_window(course: Course) -> str:
    return f"{course.start:%Y-%m-%d %H:%M} to {course.end:%Y-%m-%d %H:%M} UTC"


async def course_order(spawner, catalogue, backends) -> SessionOrder:
    """The session order of ``spawner`` (a ``course-<id>`` server), or a refusal people read."""
    contact = spawner.policy.contact
    cid = course_of_server(spawner.name)
    book = course_book_for(spawner.authenticator)
    course = book.course(cid) if book else None
    name = spawner.user.name
    if course is None or not course.has_participant(name):
        raise refuse(f"There is no course \u201c{cid}\u201d you take part in, so no course session was started. "
                     f"Ask your instructor, or contact {contact}.", reason="no-course", status_code=404)
    now = book.now()
    if not course.sessions_allowed(now, warm_up=book.warm_up_delta):
        raise refuse(f"The course \u201c{course.title}\u201d runs from {describe_window(course)}; its sessions "
                     f"start only then.", reason="course-window", status_code=403)
    try:
        profile = catalogue.get(course.profile)
    except KeyError:
        raise refuse(f"The course \u201c{course.title}\u201d asks for the profile \u201c{course.profile}\u201d, "
                     f"which this hub does not offer. Ask your instructor to choose another.",
                     reason="course-profile") from None
    backend = course.backend or next((b for b in backends if b in profile.backends), "")
    if backend not in backends or backend not in profile.backends:
        raise refuse(f"The course \u201c{course.title}\u201d asks for the {backend or 'unknown'} backend, which "
                     f"this hub does not offer with its profile. Ask your instructor.", reason="course-backend")
    request = course.request(backend)
    others = [n for n in live_course_servers(spawner.db, course.id) if n != name]
    if not fits(course.quota, total(request for _ in others), request):
        raise refuse(f"The course \u201c{course.title}\u201d has used its quota ({course.quota.sessions} sessions "
                     f"at once), so your session was not started. Ask your instructor.", reason="course-quota")
    if course.material is not None and book.material_problem(course):
        raise refuse(f"The course \u201c{course.title}\u201d takes its material from a repository this hub does not "
                     f"allow. Ask your instructor, or contact {contact}.", reason="course-material")
    if book.is_temporary(name):
        account, run_as = Account(username=name, roles=frozenset({PARTICIPANT_ROLE}),
                                  display_name=f"{course.title} participant"), book.temporary_run_as or None
    else:
        account, run_as = await _regular_account(spawner), None
    return SessionOrder(request, profile, account, (), run_as=run_as,
                        material=course.material.to_dict() if course.material else None)


async def _regular_account(spawner) -> Account:
    """A regular participant's account (from their login, or the source if they never signed in).
    A course session mounts no proposal: the course needs none."""
    state = await spawner.user.get_auth_state()
    known = read_auth_state(state)
    lookup = lookup_for(spawner.authenticator)
    if known is None and lookup is not None:
        try:
            known = await account_from_source(spawner.user, lookup, spawner.policy, state=state, log=spawner.log,
                                              manage_groups=False)
        except FirstStartRefused as e:
            raise refuse(e.message, reason=e.reason, status_code=403) from None
    if known is None:
        raise refuse("The hub has no account information for you. Please sign in again.", reason="no-auth-state")
    return known[0]


# -- after the window
def start_cleanup(app, book: CourseBook) -> None:
    """Run :func:`cleanup` every :data:`CLEANUP_INTERVAL` seconds in the hub (from the login's start-up check)."""
    if getattr(app, "_daas_course_cleanup", None) is not None:
        return
    callback = PeriodicCallback(lambda: asyncio.ensure_future(_cleanup_logged(app, book)), CLEANUP_INTERVAL * 1000)
    app._daas_course_cleanup = callback
    callback.start()


async def _cleanup_logged(app, book: CourseBook) -> None:
    try:
        await cleanup(app, book)
    except Exception:  # noqa: BLE001 - the next round tries again
        book.log.exception("Course clean-up failed; it runs again in %s s", CLEANUP_INTERVAL)


def _home_root(book: CourseBook) -> str:
    """Where temporary accounts' homes are: the local backend's ``home_root`` (the same setting)."""
    spawner_config = book.config.get("LocalSpawner", {})
    return str(spawner_config.get("home_root", "") or "")


async def cleanup(app, book: CourseBook) -> dict:
    """Stop ended courses' sessions; remove temporary accounts past the grace period, with their
    home folders. Regular users lose only their course session, never their account or files."""
    live = [(sp.user.name, sp.name) for sp in app.db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None))
            if course_of_server(sp.name)]
    plan = book.cleanup(live)
    stopped, removed = [], []
    for user_name, name in plan.stop:
        try:
            user = app.users[user_name]
        except KeyError:
            continue
        spawner = user.spawners.get(name)
        if spawner is None or spawner.pending:
            continue
        book.log.info("Course %s has ended: stopping %s's course session", course_of_server(name), user_name)
        await app.proxy.delete_user(user, name)
        await user.stop(name)
        stopped.append(f"{user_name}/{name}")
    for name in plan.remove:
        if not book.is_temporary(name):  # only temporary accounts, ever
            continue
        orm_user = orm.User.find(app.db, name)
        if orm_user is not None:
            user = app.users[orm_user]
            for sp_name, sp in list(user.spawners.items()):
                if sp.active and not sp.pending:
                    await app.proxy.delete_user(user, sp_name)
                    await user.stop(sp_name)
            await user.delete_spawners()
            app.users.delete(user)
        root = _home_root(book)
        home = Path(root) / name if root else None
        if home is not None and home.is_dir() and not home.is_symlink():
            shutil.rmtree(home, ignore_errors=True)
        book.forget_temporary(name)
        book.log.info("Removed the temporary account %s and its files (its course ended, grace period over)", name)
        removed.append(name)
    return {"stopped": stopped, "removed": removed}
