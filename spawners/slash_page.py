"""Hub pages answer with and without a trailing slash (``/hub/login/`` -> ``/hub/login``).

Vanilla JupyterHub answers 404 to ``/hub/login/``, ``/hub/home/``, ``/hub/spawn/``...
This handler is registered after every hub page (``JupyterHub.extra_handlers``), so
it only sees paths no page took: it redirects them to the same path without the
slash(es), on the hub's own prefix (never another host), keeping the query. GET
and HEAD get a 302; other methods a 307, which browsers repeat with the same
method and body (so a login form posted to ``/hub/login/`` still works). The API
(``/hub/api/...``) is left to JupyterHub's own 404.
"""

from __future__ import annotations

from jupyterhub.handlers.base import BaseHandler

#: every path under the hub prefix that ends in "/" (but the API's), captured without the slashes
PATTERN = r"/((?!api/)[^?]*?[^/?])/+"


class TrailingSlashHandler(BaseHandler):
    """Redirect ``<hub prefix><path>/`` to ``<hub prefix><path>``."""

    def _target(self, path: str) -> str:
        # collapse "//" so the target can never be read as another host ("//evil.example")
        clean = "/".join(part for part in path.split("/") if part)
        target = f"{self.hub.base_url.rstrip('/')}/{clean}"
        if self.request.query:
            target += f"?{self.request.query}"
        return target

    def _redirect(self, path: str, status: int):
        self.redirect(self._target(path), status=status)

    def check_xsrf_cookie(self):
        """A redirect changes nothing; the page it leads to checks the form's token."""

    def get(self, path):
        self._redirect(path, 302)

    def head(self, path):
        self._redirect(path, 302)

    def post(self, path):
        self._redirect(path, 307)

    def put(self, path):
        self._redirect(path, 307)

    def delete(self, path):
        self._redirect(path, 307)


__all__ = ["PATTERN", "TrailingSlashHandler"]
