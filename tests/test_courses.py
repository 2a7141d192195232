"""Courses without a hub: the YAML document, the window, who may open what, the quota,
one-time links and the clean-up, with a clock the test sets (``CourseBook.clock``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daas_hub.course_book import CourseBook, LinkRefused
from daas_hub.courses import (
    Course,
    Phase,
    check_material_url,
    cleanup_plan,
    course_of_server,
    edit_form,
    edited,
    may_open,
    server_name,
    start_plan,
    token_digest,
)
from daas_hub.errors import SettingsError
from daas_hub.quotas import GIB

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
NOW = [T0.timestamp()]


def fake_time() -> float:
    return NOW[0]


def at(hours: float) -> None:
    NOW[0] = (T0 + timedelta(hours=hours)).timestamp()


def doc(**changes) -> dict:
    d = {
        "id": "py101", "title": "Python for beamline data", "instructors": ["ivan"],
        "participants": ["erin"], "temporary_accounts": 3,
        "window": {"start": "2026-10-01T09:00:00+00:00", "end": "2026-10-01T17:00:00Z"},
        "session": {"profile": "python", "cpu": 1, "memory": "2G", "hours": 8},
        "material": {"url": "git://127.0.0.1:9418/intro.git", "branch": "main"},
    }
    d.update(changes)
    return d


def test_course_document_round_trip():
    c = Course.from_dict(doc())
    assert c.everyone() == ["erin", "py101-01", "py101-02", "py101-03"]
    assert c.memory == 2 * GIB and c.material.folder == "course"
    assert Course.from_dict(c.to_dict()) == c
    assert c.quota.sessions == 4 and c.quota.memory == 8 * GIB
    assert server_name("py101") == "course-py101" and course_of_server("course-py101") == "py101"
    assert course_of_server("course-") is None and course_of_server("mx-1001-python") is None


@pytest.mark.parametrize(("changes", "entry", "fix"), [
    ({"id": "Py 101"}, "id", "lower-case letters and digits"),
    ({"window": {"start": "2026-10-02T09:00", "end": "2026-10-01T09:00"}}, "window > end", "end after"),
    ({"window": {"start": "tomorrow", "end": "2026-10-01T09:00"}}, "window > start", "date and time"),
    ({"session": {"profile": "python", "cpu": 0}}, "session > cpu", "minimum"),
    ({"participants": ["py101-02"]}, "participants", "remove it"),
    ({"material": {"url": "ftp://x/y"}}, "material > url", "https://, git:// or file://"),
    ({"colour": "red"}, "(top level)", "keys allowed"),
])
def test_bad_course_documents_name_the_entry(changes, entry, fix):
    with pytest.raises(SettingsError) as e:
        Course.from_dict(doc(**changes), file="py101.yaml")
    assert e.value.entry == entry, str(e.value)
    assert fix in str(e.value)


def test_editing_changes_only_what_the_form_holds():
    c = Course.from_dict(doc())
    form = edit_form(c)
    assert form == {"title": "Python for beamline data", "start": "2026-10-01T09:00", "end": "2026-10-01T17:00",
                    "participants": "erin", "material_url": "git://127.0.0.1:9418/intro.git", "branch": "main"}
    assert edited(c, form) == c
    new = edited(c, {**form, "title": "Python, day 2", "start": "2026-10-02T09:00", "end": "2026-10-02T12:00",
                     "participants": "erin, carol erin", "material_url": "git://127.0.0.1:9418/day2.git",
                     "branch": ""})
    assert (new.title, new.start, new.end) == ("Python, day 2", T0 + timedelta(days=1), T0 + timedelta(days=1, hours=3))
    assert new.participants == ("erin", "carol") and new.material.url.endswith("day2.git")
    assert new.material.branch == "main"
    # what the form does not hold stays
    assert (new.id, new.instructors, new.temporary_accounts, new.cpu, new.hours) == ("py101", ("ivan",), 3, 1, 8)
    assert edited(c, {**form, "material_url": ""}).material is None


@pytest.mark.parametrize(("changes", "entry"), [
    ({"end": "2026-10-01T08:00"}, "window > end"),
    ({"start": "next monday"}, "window > start"),
    ({"title": ""}, "title"),
    ({"participants": "erin py101-02"}, "participants"),
    ({"participants": "erin Bob"}, "participants[1]"),
    ({"material_url": "ftp://x/y"}, "material > url"),
    ({"branch": "-rf"}, "material > branch"),
])
def test_bad_edits_name_the_entry(changes, entry):
    c = Course.from_dict(doc())
    with pytest.raises(SettingsError) as e:
        edited(c, {**edit_form(c), **changes})
    assert e.value.entry == entry, str(e.value)


def test_window_and_rules():
    c = Course.from_dict(doc())
    assert c.phase(T0 - timedelta(minutes=1)) is Phase.BEFORE
    assert c.phase(T0) is Phase.OPEN and c.phase(T0 + timedelta(hours=8)) is Phase.AFTER
    assert c.sessions_allowed(T0 - timedelta(minutes=30), warm_up=timedelta(hours=1))
    assert not c.sessions_allowed(T0 - timedelta(hours=2), warm_up=timedelta(hours=1))


@pytest.mark.parametrize(("who", "target", "admin", "allowed"), [
    ("ivan", "py101-01", False, True),
    ("ivan", "erin", False, True),
    ("ivan", "alice", False, False),  # not in the course
    ("bob", "py101-01", False, False),  # not its instructor
    ("dave", "py101-02", True, True),  # an admin
    ("ivan", "ivan", False, False),
])
def test_who_may_open_whose_session(who, target, admin, allowed):
    assert may_open(Course.from_dict(doc()), who, target, admin=admin) is allowed


def test_start_plan_stays_within_the_course_quota():
    c = Course.from_dict(doc(quota={"sessions": 3}))
    plan = start_plan(c, live=["py101-02"], backend="local")
    assert plan.running == ("py101-02",)
    assert plan.start == ("erin", "py101-01")
    assert plan.refused == ("py101-03",)
    assert plan.left.sessions == 0


def test_cleanup_touches_only_ended_courses_and_temporary_accounts():
    c = Course.from_dict(doc())
    live = [("erin", "course-py101"), ("erin", "mx"), ("alice", "")]
    temporary = {"py101-01": "py101", "py101-02": "py101"}
    during = cleanup_plan([c], live, temporary, T0 + timedelta(hours=1), grace=timedelta(hours=24))
    assert during.stop == () and during.remove == ()
    after = cleanup_plan([c], live, temporary, T0 + timedelta(hours=9), grace=timedelta(hours=24))
    assert after.stop == (("erin", "course-py101"),) and after.remove == ()
    later = cleanup_plan([c], live, temporary, T0 + timedelta(hours=33), grace=timedelta(hours=24))
    assert later.remove == ("py101-01", "py101-02")


def test_material_only_from_the_sites_repositories():
    assert check_material_url("https://git.example/training/a.git", ["https://git.example/training/"]) is None
    assert "only from" in check_material_url("https://evil.example/a.git", ["https://git.example/training/"])
    assert "CourseBook.material_prefixes" in check_material_url("https://git.example/a.git", [])


@pytest.fixture
def book(tmp_path):
    at(-1)
    b = CourseBook(courses_dir=str(tmp_path / "courses"), clock=f"{__name__}.fake_time",
                   material_prefixes=["git://127.0.0.1:9418/"], grace_period=24)
    b.save(Course.from_dict(doc()))
    return b


def test_links_sign_in_once_and_never_after_the_window(book):
    c = book.course("py101")
    tokens = book.issue_links(c)
    assert sorted(tokens) == ["py101-01", "py101-02", "py101-03"]
    assert len({*tokens.values()}) == 3 and all(len(t) >= 40 for t in tokens.values())
    stored = (book._state_path()).read_text()
    assert not any(t in stored for t in tokens.values()) and token_digest(tokens["py101-01"]) in stored
    assert oct(book._state_path().stat().st_mode & 0o777) == "0o600"
    assert book.redeem(tokens["py101-01"], contact="us")[1] == "py101-01"
    with pytest.raises(LinkRefused, match="already used"):
        book.redeem(tokens["py101-01"], contact="us")
    with pytest.raises(LinkRefused, match="not valid"):
        book.redeem("x" * 43, contact="us")
    at(8)
    with pytest.raises(LinkRefused, match="has ended"):
        book.redeem(tokens["py101-02"], contact="us")
    assert book.temporary_course("py101-01") is None  # the account no longer signs in


def test_new_links_replace_unused_ones(book):
    c = book.course("py101")
    first = book.issue_links(c, ["py101-03"])
    second = book.issue_links(c, ["py101-03"])
    with pytest.raises(LinkRefused, match="not valid"):
        book.peek(first["py101-03"], contact="us")
    assert book.peek(second["py101-03"], contact="us")[1] == "py101-03"


def test_links_expire(book):
    book.link_lifetime = 0.5
    tokens = book.issue_links(book.course("py101"))
    at(-0.6)
    assert book.peek(tokens["py101-02"], contact="us")
    at(-0.5)
    with pytest.raises(LinkRefused, match="expired"):
        book.peek(tokens["py101-02"], contact="us")


def test_book_refuses_foreign_material_and_reads_admin_files(book, tmp_path):
    with pytest.raises(SettingsError, match="material is taken only from"):
        book.save(Course.from_dict(doc(id="bad", material={"url": "https://elsewhere.example/x.git"})))
    (tmp_path / "courses" / "broken.yaml").write_text("id: broken\n")
    (tmp_path / "courses" / "other.yaml").write_text("id: py101\n")
    assert [c.id for c in book.courses()] == ["py101"]
    assert book.is_temporary("py101-02") and not book.is_temporary("erin")
