"""The hub pages for operations: notices for JupyterLab, extensions, and three admin pages.

Registered by the configure step (``daas_hub.config.hub_handlers``):

- ``/hub/daas/notices.js?server=NAME``: a script JupyterLab loads (a same-origin
  script, so the hub's login cookie authenticates it): the announcements, the
  session's time left and, in a course session, the course's latest messages, drawn
  as a bar at the top, refreshed every ``Operations.notice_refresh`` seconds;
- ``/hub/daas/extend`` (POST from the home page): extend a session within quota;
- ``/hub/daas/admin/announcements``, ``/hub/daas/admin/usage``, ``/hub/daas/admin/status``.
"""

from __future__ import annotations

import json
import time

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web

from daas_hub.courses import course_of_server, may_manage
from daas_hub.quotas import GIB
from daas_hub.usage import BY, LEVELS, parse_time, status, usage_report, usage_series
from daas_hub.usage_plot import bar_chart

from .courses import course_book_for
from .operations import announcements, operations_for, store_at

#: how many of a course's latest broadcasts the notice bar shows in its sessions
COURSE_MESSAGES = 3

_SCRIPT = r"""
(function () {
  if (!window.daasNotices) {
    window.daasNotices = function (data) {
      var bar = document.getElementById("daas-notices");
      if (!bar) {
        bar = document.createElement("div");
        bar.id = "daas-notices";
        bar.setAttribute("role", "status");
        // clicks go through the bar to JupyterLab's top bar beneath, except on the bar's links
        bar.style.cssText = "position:fixed;top:0;left:50%;transform:translateX(-50%);z-index:10000;" +
          "max-width:70%;font:13px sans-serif;pointer-events:none;";
        document.body.appendChild(bar);
      }
      bar.textContent = "";
      var colors = {info: "#d9edf7", warning: "#fcf8e3", danger: "#f2dede"};
      function line(text, level, cls) {
        var d = document.createElement("div");
        d.className = cls;
        d.style.cssText = "padding:4px 12px;margin:2px;border:1px solid #bbb;border-radius:4px;background:" +
          (colors[level] || colors.info);
        d.textContent = text;
        bar.appendChild(d);
        return d;
      }
      (data.announcements || []).forEach(function (a) { line(a.text, a.level, "daas-announcement"); });
      (data.course_messages || []).forEach(function (m) {
        line("Message to the course (" + m.at + ", " + m.by + "): " + m.text, "warning", "daas-course-message");
      });
      var life = data.lifetime;
      if (life) {
        var d = line(life.phase === "warning"
          ? "This session stops in " + life.left + " (at " + life.ends + "). Save your work; you can extend it on the hub home page: "
          : "Time left in this session: " + life.left + " (until " + life.ends + "). ",
          life.phase === "warning" ? "danger" : "info", "daas-time-left daas-phase-" + life.phase);
        var a = document.createElement("a");
        a.href = data.home_url; a.target = "_blank"; a.textContent = "hub home";
        a.style.pointerEvents = "auto";
        d.appendChild(a);
      }
      setTimeout(function () {
        var s = document.createElement("script");
        s.src = data.next;
        document.head.appendChild(s);
        s.onload = s.onerror = function () { s.remove(); };
      }, data.refresh * 1000);
    };
  }
  window.daasNotices(__DATA__);
})();
"""


class _OpsHandler(BaseHandler):
    @property
    def ops(self):
        return operations_for(self.settings["config"])

    @property
    def store(self):
        return store_at(self.ops.store)

    def admin_only(self):
        user = self.current_user
        if user is None or not user.admin:
            raise web.HTTPError(403, "This page is for the hub's admins.")
        return user


class NoticesScriptHandler(_OpsHandler):
    """The notice bar's script and data for one session (loaded by JupyterLab, docs/operations.md)."""

    async def get(self):
        self.set_header("Content-Type", "application/javascript; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        user = self.current_user
        if user is None:
            self.finish("/* daas notices: not signed in to the hub */\n")
            return
        server = self.get_argument("server", "")
        lifetime = None
        if server in user.orm_user.orm_spawners:
            info = getattr(user.spawners[server], "lifetime_info", None)
            lifetime = info() if info is not None and user.spawners[server].active else None
        data = {
            "announcements": [{"text": a.text, "level": a.level} for a in announcements(user)],
            "course_messages": self.course_messages(user, server),
            "lifetime": lifetime,
            "home_url": url_path_join(self.hub.base_url, "home"),
            "refresh": self.ops.notice_refresh,
            "next": self.request.uri,
        }
        payload = json.dumps(data).replace("</", "<\\/")
        self.finish(_SCRIPT.replace("__DATA__", payload))


    def course_messages(self, user, server: str) -> list[dict]:
        """In a course session: the course's last :data:`COURSE_MESSAGES` broadcasts, for its
        participants and instructors (docs/instructors.md)."""
        cid = course_of_server(server)
        book = course_book_for(self.authenticator) if cid else None
        course = book.course(cid) if book else None
        if course is None or not (course.has_participant(user.name) or may_manage(course, user.name, admin=user.admin)):
            return []
        return [{"at": m["at"][:16].replace("T", " "), "by": m["by"], "text": m["text"]}
                for m in book.messages(cid)[-COURSE_MESSAGES:]]


class ExtendHandler(_OpsHandler):
    """POST ``server`` and ``hours`` (the home page's form): extend a running session within quota."""

    @web.authenticated
    async def post(self):
        user = self.current_user
        server = self.get_argument("server", "")
        try:
            hours = float(self.get_argument("hours", ""))
        except ValueError:
            raise web.HTTPError(400, "Give the hours to extend by as a number, e.g. 1.") from None
        if server not in user.orm_user.orm_spawners or not user.spawners[server].active:
            raise web.HTTPError(404, "You have no running session of that name.")
        spawner = user.spawners[server]
        try:
            await spawner.extend_lifetime(hours)
        except ValueError as e:
            raise web.HTTPError(400, str(e).replace("%", "%%")) from None
        spawner.orm_spawner.state = spawner.get_state()
        self.db.commit()
        self.redirect(url_path_join(self.hub.base_url, "home"))


class AnnouncementsHandler(_OpsHandler):
    """Admins set and withdraw announcements (shown at once on hub pages and in JupyterLab)."""

    @web.authenticated
    async def get(self, problem: str = ""):
        self.admin_only()
        now = self.ops.now()
        html = await self.render_template(
            "daas_announcements.html", items=self.store.announcements(), now=now, levels=LEVELS, problem=problem,
            fmt=lambda t: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t)) if t else "until withdrawn")
        self.finish(html)

    @web.authenticated
    async def post(self):
        self.admin_only()
        if self.get_argument("withdraw", ""):
            try:
                self.store.withdraw(int(self.get_argument("withdraw")))
            except ValueError:
                raise web.HTTPError(400, "Unknown announcement.") from None
            self.redirect(self.request.path)
            return
        now = self.ops.now()
        try:
            ends_text = self.get_argument("ends", "").strip()
            ends = parse_time(ends_text, what="The end time") if ends_text else None
            self.store.announce(self.get_argument("text", ""), level=self.get_argument("level", "info"),
                                ends=ends, now=now)
        except ValueError as e:
            self.set_status(400)
            await self.get(problem=str(e))
            return
        self.redirect(self.request.path)


def _period(handler) -> tuple[float, float]:
    now = handler.ops.now()
    frm, to = handler.get_argument("from", ""), handler.get_argument("to", "")
    try:
        start = parse_time(frm, what="From") if frm else now - 7 * 86400
        end = parse_time(to, what="To") if to else now
    except ValueError as e:
        raise web.HTTPError(400, str(e)) from None
    if end <= start:
        raise web.HTTPError(400, "The period ends before it starts; choose a later 'to'.")
    return start, end


class UsageHandler(_OpsHandler):
    """Usage per proposal, user and course over a period, with a CPU-hours plot per proposal."""

    @web.authenticated
    async def get(self):
        self.admin_only()
        start, end = _period(self)
        records = self.store.sessions(since=start, until=end)
        edges, series = usage_series(records, start, end, buckets=24)
        tables = {by: usage_report(records, start, end, by) for by in BY}
        plots = [bar_chart(pid, edges, values) for pid, values in series.items()]
        iso = lambda t: time.strftime("%Y-%m-%dT%H:%M", time.gmtime(t))  # noqa: E731
        html = await self.render_template("daas_usage.html", tables=tables, plots=plots,
                                          start=iso(start), end=iso(end))
        self.finish(html)


class StatusHandler(_OpsHandler):
    """What ``daas-hub status`` prints: sessions per backend, proposal and profile, pending, quota use."""

    @web.authenticated
    async def get(self):
        self.admin_only()
        st = status(self.store.sessions(open_only=True))
        html = await self.render_template("daas_status.html", st=st, now=self.ops.now(), gib=GIB)
        self.finish(html)

