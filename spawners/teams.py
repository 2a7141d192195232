"""Sharing a session with its proposal's team, with JupyterHub's sharing (docs/teams.md).

The hub page ``/hub/share`` (linked from JupyterLab's "Share" button and the hub
home page) and the REST endpoint ``/hub/api/daas/shares/<owner>/<server>`` grant
and revoke JupyterHub shares (``orm.Share``: ``access:servers!server=owner/server``)
after the pure rule :func:`daas_hub.teams.share_refusal`: only members of the
session's proposal. Users get no ``shares`` scope of their own, so JupyterHub's
``/hub/api/shares`` refuses them (403) and these two are the only way in. A share
ends when the owner revokes it or the session stops (:func:`end_shares`); a revoke
also ends what the person already has open (:func:`end_visits`).
"""

from __future__ import annotations

import json

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from daas_hub.access import read_auth_state
from daas_hub.courses import course_of_server
from daas_hub.teams import VISITORS_RECHECK_PATH, invitable, share_refusal


def end_shares(spawner) -> None:
    """Delete every share of ``spawner``'s server (it stopped)."""
    orm_spawner = getattr(spawner, "orm_spawner", None)
    if orm_spawner is None or not (orm_spawner.shares or orm_spawner.share_codes):
        return
    db = spawner.db
    for share in [*orm_spawner.shares, *orm_spawner.share_codes]:
        db.delete(share)
    db.commit()
    spawner.log.info("Sharing of %s ended: the session stopped", spawner._log_name)


async def end_visits(handler, spawner, orm_users) -> None:
    """After a revoke, end at once what ``orm_users`` already have open in ``spawner``'s session.

    Their OAuth tokens for the session (issued by its OAuth client when they opened it) are
    deleted, so the session's next question to the hub about them gets no answer; then the
    session is asked to check its visitors again (:mod:`daas_hub.spawners.visitors`), which
    closes their kernel, collaboration and terminal connections. The request goes straight
    to the session's server with a token of the owner valid for a minute and deleted after.
    """
    db = handler.db
    ids = [u.id for u in orm_users]
    tokens = (db.query(orm.APIToken).filter(orm.APIToken.user_id.in_(ids))
              .filter(orm.APIToken.client_id == spawner.oauth_client_id).all()) if ids else []
    for token in tokens:
        db.delete(token)
    db.commit()
    if not spawner.ready or spawner.server is None:
        return
    owner = spawner.user
    secret = owner.new_api_token(note="daas-hub: a share was revoked, the session checks its visitors",
                                 expires_in=60, scopes=[f"access:servers!server={owner.name}/{spawner.name}"])
    try:
        request = HTTPRequest(url_path_join(spawner.server.url, VISITORS_RECHECK_PATH), method="POST", body=b"{}",
                              headers={"Authorization": f"token {secret}"}, request_timeout=10)
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:  # refused, unreachable, timed out
            response, error = None, str(e)
        else:
            error = "" if response.code == 200 else f"HTTP {response.code}"
        if error:
            handler.log.warning("%s's session could not close the connections of people it is no longer shared "
                                "with (%s); their next request is refused anyway", owner.name, error)
        else:
            try:
                closed = json.loads(response.body or b"{}").get("closed", [])
            except (ValueError, AttributeError):
                closed = []
            handler.log.info("%s: %d connection(s) of people it is no longer shared with closed",
                             spawner._log_name, len(closed))
    finally:
        orm_token = orm.APIToken.find(db, secret)
        if orm_token is not None:
            db.delete(orm_token)
            db.commit()


class ShareRefused(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


async def session_team(user, server: str):
    """``(spawner, proposal, members)`` of ``user``'s running session ``server``."""
    spawner = user.spawners.get(server)
    if spawner is None or not spawner.active:
        raise ShareRefused(f"You have no running session called \u201c{server or 'default'}\u201d; only a "
                           f"running session can be shared.", 404)
    if course_of_server(server):
        raise ShareRefused("A course session is not shared: your instructor can open it from the course page.")
    pid = (getattr(spawner, "session_options", None) or {}).get("proposal")
    known = read_auth_state(await user.get_auth_state())
    proposals = known[1] if known else []
    proposal = next((p for p in proposals if p.id == pid), None)
    return spawner, proposal, invitable(proposal, user.name)


def shares_of(db, spawner) -> list[str]:
    return sorted(s.user.name for s in spawner.orm_spawner.shares if s.user is not None)


async def grant(handler, owner, server: str, names: list[str]) -> list[str]:
    """Share ``owner``'s session with ``names`` (all checked first: nothing is granted if one is refused)."""
    spawner, proposal, _ = await session_team(owner, server)
    for name in names:
        refusal = share_refusal(proposal, owner.name, name)
        if refusal:
            raise ShareRefused(refusal)
    for name in names:
        invitee = handler.user_from_username(name)  # a member who never signed in gets a hub user
        orm.Share.grant(handler.db, spawner.orm_spawner, invitee.orm_user)
        handler.log.info("%s shared %s with %s (proposal %s)", owner.name, spawner._log_name, name, proposal.id)
    return shares_of(handler.db, spawner)


async def revoke(handler, owner, server: str, names: list[str]) -> list[str]:
    """Stop sharing ``owner``'s session with ``names``: they cannot open it again, and what they have
    open ends at once (:func:`end_visits`)."""
    spawner, _, _ = await session_team(owner, server)
    ended = []
    for name in names:
        orm_user = orm.User.find(handler.db, name)
        if orm_user is not None:
            orm.Share.revoke(handler.db, spawner.orm_spawner, orm_user)
            ended.append(orm_user)
            handler.log.info("%s stopped sharing %s with %s", owner.name, spawner._log_name, name)
    await end_visits(handler, spawner, ended)
    return shares_of(handler.db, spawner)


class SharePage(BaseHandler):
    """``/hub/share``: the owner's running sessions, who they are shared with, whom they may invite."""

    @web.authenticated
    async def get(self, message: str = "", error: str = ""):
        user = self.current_user
        sessions = []
        for name, sp in sorted(user.spawners.items()):
            if not sp.active or course_of_server(name):
                continue
            try:
                _, proposal, members = await session_team(user, name)
            except ShareRefused:
                continue
            sessions.append({"server": name, "proposal": proposal.id if proposal else None,
                             "members": members, "shared": shares_of(self.db, sp),
                             "url": f"{self.base_url}user/{user.name}/{name}/"})
        html = await self.render_template("share.html", sessions=sessions, message=message, error=error,
                                          shared_with_me=self._shared_with_me(user))
        self.finish(html)

    def _shared_with_me(self, user) -> list[dict]:
        rows = self.db.query(orm.Share).filter(orm.Share.user_id == user.id).all()
        return [{"owner": s.owner.name, "server": s.spawner.name,
                 "url": f"{self.base_url}user/{s.owner.name}/{s.spawner.name}/" if s.spawner.name
                 else f"{self.base_url}user/{s.owner.name}/"} for s in rows]

    @web.authenticated
    async def post(self):
        user = self.current_user
        server = self.get_body_argument("server", "")
        action = self.get_body_argument("action", "")
        names = [n for n in self.get_body_arguments("member") if n]
        try:
            if action == "share-all":
                _, _, names = await session_team(user, server)
            if action in ("share", "share-all"):
                if not names:
                    raise ShareRefused("Choose at least one member to share with.")
                await grant(self, user, server, names)
                message = f"Shared {server or 'your session'} with {', '.join(names)}."
            elif action == "revoke":
                await revoke(self, user, server, names)
                message = f"{', '.join(names)} can no longer open {server or 'your session'}."
            else:
                raise ShareRefused("Unknown action.")
        except ShareRefused as e:
            self.set_status(e.status)
            return await self.get(error=e.message)
        await self.get(message=message)


class ShareAPI(APIHandler):
    """``/hub/api/daas/shares/<owner>/<server>``: GET the shares and the invitable members;
    POST ``{"users": [...]}`` to share; DELETE ``{"users": [...]}`` to revoke. Owner only."""

    def _owner(self, owner_name: str):
        user = self.current_user
        if user is None or getattr(user, "kind", "user") != "user" or user.name != owner_name:
            raise web.HTTPError(403, "Only the owner of a session shares it.")
        return user

    def _users(self) -> list[str]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "The request body must be JSON such as {\"users\": [\"bob\"]}.") from None
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, list) or not users or not all(isinstance(u, str) and len(u) <= 64 for u in users):
            raise web.HTTPError(400, "Give the members to share with as {\"users\": [\"bob\"]}.")
        return users

    async def _reply(self, fn, owner_name, server):
        owner = self._owner(owner_name)
        try:
            shared = await fn(owner)
            _, proposal, members = await session_team(owner, server)
        except ShareRefused as e:
            raise web.HTTPError(e.status, e.message) from None
        self.write({"server": server, "proposal": proposal.id if proposal else None, "members": members,
                    "shared_with": shared})

    @web.authenticated
    async def get(self, owner_name, server=""):
        async def nothing(owner):
            spawner, _, _ = await session_team(owner, server)
            return shares_of(self.db, spawner)
        await self._reply(nothing, owner_name, server)

    @web.authenticated
    async def post(self, owner_name, server=""):
        users = self._users()
        await self._reply(lambda owner: grant(self, owner, server, users), owner_name, server)

    @web.authenticated
    async def delete(self, owner_name, server=""):
        users = self._users()
        await self._reply(lambda owner: revoke(self, owner, server, users), owner_name, server)
