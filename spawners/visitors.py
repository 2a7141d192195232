"""A visitor's access to a session ends at once when the hub says so (docs/teams.md).

A Jupyter server extension for sessions started by the hub (enabled by
``daas_hub_sharing.json`` in ``etc/jupyter/jupyter_server_config.d``). Visitors are
everyone but the session's owner: team members a session is shared with, an
instructor opening a course session.

JupyterHub's single-user server keeps the hub's answer about a browser for
``HubOAuth.cache_max_age`` (300 s), and checks a websocket only when it opens. The
hub resolves a visitor's token against the shares of *now* (``get_scopes_for``
intersects the token's scopes with its owner's), but the session does not ask again,
so a revoked share kept working. This extension makes the session's identity provider
a :class:`DaasIdentityProvider` (JupyterHub's, whose HubOAuth is a
:class:`VisitorCheckingHubOAuth`):

- the owner's answers are cached as before; a visitor's are never reused, so each
  request of a visitor asks the hub again;
- the websockets visitors open (kernels, collaboration rooms, terminals, events) are
  remembered, and ``POST <session>/api/daas/visitors/recheck`` asks the hub again
  about each and closes those it no longer allows. The hub calls it when an owner
  stops sharing (:func:`daas_hub.spawners.teams.end_visits`), with a short-lived token
  of the owner; only the owner may call it.

Outside a hub session (no ``JUPYTERHUB_API_URL``) it does nothing.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from jupyterhub.services.auth import HubOAuth, _ExpiringDict
from jupyterhub.singleuser.extension import JupyterHubIdentityProvider
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import default

from daas_hub.teams import VISITORS_RECHECK_PATH

#: websocket close code for "your access ended" (RFC 6455: policy violation)
ACCESS_ENDED = 1008


def is_visitor(model: dict | None, owner: str) -> bool:
    """Whether the hub's answer ``model`` names someone other than the session's owner."""
    if not model:
        return False
    return not (model.get("kind", "user") == "user" and model.get("name") == owner)


class OwnerOnlyCache(_ExpiringDict):
    """HubAuth's cache of the hub's answers, which never gives back an answer about a visitor."""

    def __init__(self, max_age: int, owner: str):
        super().__init__(max_age)
        self.owner = owner

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if is_visitor(value, self.owner):
            raise KeyError(key)  # HubAuth then asks the hub again
        return value


class VisitorCheckingHubOAuth(HubOAuth):
    """JupyterHub's HubOAuth that asks the hub again about visitors and remembers their websockets."""

    @default("cache")
    def _owner_only_cache(self):
        return OwnerOnlyCache(self.cache_max_age, self.owner)

    @property
    def owner(self) -> str:
        return os.environ.get("JUPYTERHUB_USER", "")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # open visitor websocket -> (visitor's name, token, hub session id)
        self.visitor_sockets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get_user(self, handler, *, sync=True):
        if sync:  # the server always asks asynchronously; nothing to remember here
            return super().get_user(handler, sync=True)
        return self._get_user_noting_sockets(handler)

    async def _get_user_noting_sockets(self, handler):
        model = await super().get_user(handler, sync=False)
        if is_visitor(model, self.owner) and handler.request.headers.get("Upgrade", "").lower() == "websocket":
            self.visitor_sockets[handler] = (model.get("name", ""), self.get_token(handler),
                                             self.get_session_id(handler))
        return model

    async def _still_allowed(self, token: str, session_id: str) -> bool:
        if not token:
            return False
        model = await self.user_for_token(token, use_cache=False, session_id=session_id, sync=False)
        return bool(model and self.check_scopes(self.access_scopes, model))

    async def recheck_visitors(self) -> list[str]:
        """Ask the hub again about every open visitor websocket; close those it no longer allows.

        Returns the names whose connections were closed (one entry per connection)."""
        open_sockets = [(h, *v) for h, v in list(self.visitor_sockets.items()) if h.ws_connection is not None]
        allowed = await asyncio.gather(*(self._still_allowed(token, sid) for _, _, token, sid in open_sockets))
        closed = []
        for (handler, name, _, _), ok in zip(open_sockets, allowed, strict=True):
            if ok:
                continue
            self.visitor_sockets.pop(handler, None)
            handler.close(ACCESS_ENDED, "Your access to this session ended.")
            closed.append(name)
            self.log.info("daas-hub: closed a connection of %s to %s: their access ended", name,
                          handler.request.path)
        return closed


def _handler_class():
    from jupyter_server.base.handlers import APIHandler

    class RecheckVisitorsHandler(APIHandler):
        """``POST api/daas/visitors/recheck``: close the open connections of visitors the hub no longer allows."""

        @web.authenticated
        async def post(self):
            hub_auth = self.identity_provider.hub_auth
            if self.current_user.username != hub_auth.owner:
                raise web.HTTPError(403, "Only the owner of this session (or the hub on their behalf) may ask "
                                         "it to check its visitors again.")
            self.finish({"closed": await hub_auth.recheck_visitors()})

    return RecheckVisitorsHandler


class DaasIdentityProvider(JupyterHubIdentityProvider):
    """JupyterHub's identity provider for single-user servers, with a :class:`VisitorCheckingHubOAuth`
    (one instance: the OAuth callback, the login redirect and every request share it)."""

    @default("hub_auth")
    def _visitor_checking_hub_auth(self):
        return VisitorCheckingHubOAuth(parent=self)


def _use_daas_provider(serverapp) -> None:
    if serverapp.identity_provider_class is JupyterHubIdentityProvider:
        serverapp.identity_provider_class = DaasIdentityProvider


def _jupyter_server_extension_points():
    return [{"module": "daas_hub.spawners.visitors"}]


def _link_jupyter_server_extension(serverapp):
    """Before the identity provider exists: JupyterHub's extension sets ``identity_provider_class``
    when it is linked (before or after this one, by name); its own class becomes ours."""
    if not os.environ.get("JUPYTERHUB_API_URL"):
        return
    serverapp.observe(lambda change: _use_daas_provider(serverapp), "identity_provider_class")
    _use_daas_provider(serverapp)


def _load_jupyter_server_extension(serverapp):
    if not isinstance(getattr(serverapp.identity_provider, "hub_auth", None), VisitorCheckingHubOAuth):
        return
    path = url_path_join(serverapp.base_url, VISITORS_RECHECK_PATH)
    serverapp.web_app.add_handlers(".*$", [(path, _handler_class())])
    serverapp.log.info("daas-hub: visitors of this session are checked with the hub on every request")
