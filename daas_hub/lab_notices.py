"""The notice bar in JupyterLab: announcements and the session's time left.

A Jupyter server extension for sessions started by the hub (enabled by
``etc/daas_hub_notices.json``). It adds one ``<script>`` tag to the JupyterLab
and Notebook pages; the script comes from the hub itself
(``/hub/daas/notices.js``, :mod:`daas_hub.spawners.ops_pages`), which draws the
bar and refreshes it. Nothing is loaded from outside the facility. Outside a
hub session (no ``JUPYTERHUB_API_URL``) it does nothing.
"""

from __future__ import annotations

import os
from urllib.parse import quote

#: the pages that get the bar (JupyterLab and Notebook 7), relative to the server's base URL
PAGES = ("lab", "tree", "notebooks", "doc", "edit", "consoles", "terminals")


def script_tag(hub_base: str, server: str) -> bytes:
    src = f"{hub_base.rstrip('/')}/hub/daas/notices.js?server={quote(server, safe='')}"
    return f'<script src="{src}" defer></script>'.encode()


def _jupyter_server_extension_points():
    return [{"module": "daas_hub.lab_notices"}]


def _load_jupyter_server_extension(serverapp):
    if not os.environ.get("JUPYTERHUB_API_URL"):
        return
    from tornado.web import OutputTransform

    tag = script_tag(os.environ.get("JUPYTERHUB_BASE_URL", "/"), os.environ.get("JUPYTERHUB_SERVER_NAME", ""))
    prefixes = tuple(f"{serverapp.base_url.rstrip('/')}/{p}" for p in PAGES)

    class NoticeTransform(OutputTransform):
        def __init__(self, request):
            super().__init__(request)
            self._wanted = request.path.startswith(prefixes)

        def transform_first_chunk(self, status_code, headers, chunk, finishing):
            if (self._wanted and finishing and status_code == 200
                    and headers.get("Content-Type", "").startswith("text/html") and b"</body>" in chunk):
                chunk = chunk.replace(b"</body>", tag + b"</body>", 1)
                if "Content-Length" in headers:
                    headers["Content-Length"] = str(len(chunk))
            return status_code, headers, chunk

    serverapp.web_app.transforms.insert(0, NoticeTransform)  # before gzip, which would hide the page
    serverapp.log.info("daas-hub: the notice bar is added to JupyterLab pages")
