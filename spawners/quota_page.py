"""The quota page, ``/hub/quota``: a person's quota, what they use, what is left.

A JupyterHub page handler (the hub side; the ledger itself is pure,
:func:`daas_hub.quotas.ledger`). It asks the person's spawner for the figures
(``quota_summary()``, which :class:`daas_hub.spawners.wrapper.DaasSpawner` has).
The configure step registers it (``c.JupyterHub.extra_handlers``).
"""

from __future__ import annotations

from jupyterhub.handlers.base import BaseHandler
from tornado import web

from daas_hub.quotas import GIB


class QuotaHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        user = self.current_user
        spawner = user.spawner
        summarize = getattr(spawner, "quota_summary", None)
        if summarize is None:
            raise web.HTTPError(404, "This hub's spawner has no quotas.")
        try:
            summary = await summarize()
        except web.HTTPError as e:  # e.g. no proposal information: say so, no traceback
            raise web.HTTPError(e.status_code, getattr(e, "jupyterhub_message", None) or e.log_message) from None
        html = await self.render_template("quota.html", summary=summary, gib=GIB)
        self.finish(html)
