"""Conditions of use: a versioned text each user accepts before their first session.

The admin sets the text and its version (:class:`ConditionsOfUse`). Acceptance is
recorded in the user's encrypted ``auth_state`` under ``"daas_conditions"``
(``{"version", "accepted_at"}``) and logged. Every login and every refresh
rewrites ``auth_state``, so the authenticators carry the record forward
(:func:`carry_forward`); a new version asks everyone again.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlparse

from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import HasTraits, Instance, Unicode, default, validate
from traitlets.config import LoggingConfigurable

CONDITIONS_KEY = "daas_conditions"


class ConditionsOfUse(LoggingConfigurable):
    """The conditions of use users accept before their first session."""

    version = Unicode(
        "",
        config=True,
        help="""Version of the conditions of use. Empty (the default): no conditions
        are asked for. Change it whenever the text changes: everyone is asked to
        accept the new version before their next session.

        Example: ``"2026-11"``
        """,
    )

    text_file = Unicode(
        "",
        config=True,
        help="""File holding the conditions' text (plain text; blank lines separate
        paragraphs). Read when the page is shown, so an edit needs no restart, but
        bump ``version`` so that people accept the new text.

        Example: ``/etc/daas-hub/conditions-2026-11.txt``
        """,
    )

    @validate("text_file")
    def _check_text_file(self, proposal):
        path = proposal["value"]
        if path and not Path(path).is_file():
            raise ValueError(
                f"ConditionsOfUse.text_file {path!r} does not exist; write the conditions there "
                f"or correct login.conditions_of_use.file in the site settings"
            )
        return path

    @property
    def required(self) -> bool:
        return bool(self.version)

    def paragraphs(self) -> list[str]:
        if not self.text_file:
            return []
        text = Path(self.text_file).read_text(encoding="utf-8")
        return [p.strip() for p in text.split("\n\n") if p.strip()]

    def accepted(self, auth_state: dict | None) -> bool:
        """Has the holder of ``auth_state`` accepted the current version?"""
        if not self.required:
            return True
        record = (auth_state or {}).get(CONDITIONS_KEY) or {}
        return record.get("version") == self.version

    def page_url(self, hub_base_url: str, next_url: str = "") -> str:
        url = url_path_join(hub_base_url, "conditions")
        return f"{url}?{urlencode({'next': next_url})}" if next_url else url

    def refusal(self, hub_base_url: str) -> web.HTTPError:
        """The spawn guard's error: what happened and the link to accept."""
        url = self.page_url(hub_base_url)
        err = web.HTTPError(403, "conditions of use (version %s) not accepted", self.version, reason="Forbidden")
        err.jupyterhub_message = (
            f"Before your first session, please read and accept the conditions of use "
            f"(version {self.version}) at {url}"
        )
        err.jupyterhub_html_message = (
            f"Before your first session, please read and accept the "
            f'<a href="{html.escape(url)}">conditions of use</a> (version {html.escape(self.version)}).'
        )
        return err


class ConditionsGuard(HasTraits):
    """Mixin for logins that ask for the conditions of use: no session before they
    are accepted (the spawn page, the form and the REST API alike)."""

    conditions = Instance(ConditionsOfUse)

    @default("conditions")
    def _default_conditions(self):
        return ConditionsOfUse(parent=self)

    async def pre_spawn_start(self, user, spawner):
        if self.conditions.required and not self.conditions.accepted(await user.get_auth_state()):
            raise self.conditions.refusal(spawner.hub.base_url if spawner.hub else "/hub/")


def acceptance_record(version: str, now: datetime | None = None) -> dict:
    return {"version": version, "accepted_at": (now or datetime.now(UTC)).isoformat()}


def carry_forward(old_state: dict | None, new_state: dict | None) -> dict | None:
    """``new_state`` with the acceptance record of ``old_state`` kept (new wins)."""
    record = (old_state or {}).get(CONDITIONS_KEY)
    if record is None or new_state is None or CONDITIONS_KEY in new_state:
        return new_state
    return {**new_state, CONDITIONS_KEY: record}


def _local_path(next_url: str, default: str) -> str:
    """Only same-site paths, never another host (open-redirect guard)."""
    if not next_url:
        return default
    parsed = urlparse(next_url.replace("\\", "/"))
    if parsed.scheme or parsed.netloc or not parsed.path.startswith("/"):
        return default
    return next_url


class ConditionsHandler(BaseHandler):
    """``/hub/conditions``: show the conditions, record acceptance (POST)."""

    def initialize(self, conditions: ConditionsOfUse):
        self.conditions = conditions

    def _next(self) -> str:
        return _local_path(self.get_argument("next", ""), url_path_join(self.hub.base_url, "spawn"))

    @web.authenticated
    async def get(self):
        if not self.conditions.required:
            raise web.HTTPError(404, "no conditions of use are configured")
        user = self.current_user
        state = await user.get_auth_state()
        record = (state or {}).get(CONDITIONS_KEY) or {}
        html_page = await self.render_template(
            "conditions.html",
            conditions_version=self.conditions.version,
            conditions_paragraphs=self.conditions.paragraphs(),
            conditions_accepted=self.conditions.accepted(state),
            conditions_record=record,
            conditions_next=self._next(),
        )
        self.finish(html_page)

    @web.authenticated
    async def post(self):
        if not self.conditions.required:
            raise web.HTTPError(404, "no conditions of use are configured")
        user = self.current_user
        if self.get_body_argument("version", "") != self.conditions.version:
            # the page was shown for an older version: show the current one
            self.redirect(self.conditions.page_url(self.hub.base_url, self._next()))
            return
        state = dict(await user.get_auth_state() or {})
        state[CONDITIONS_KEY] = acceptance_record(self.conditions.version)
        await user.save_auth_state(state)
        self.log.info(
            "%s accepted the conditions of use, version %s, at %s",
            user.name, self.conditions.version, state[CONDITIONS_KEY]["accepted_at"],
        )
        self.redirect(self._next())
