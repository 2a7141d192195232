"""jupyterlab-h5web's HDF5 endpoints, imported at their first request instead of at every start.

jupyterlab-h5web's server extension imports h5py, numpy and h5grove (and, through its
package's ``__init__``, IPython) while the session's server starts: memory and CPU time
in every session, for endpoints a person may never call. Sessions
(:mod:`daas_hub.spawners.singleuser`) switch that server extension off and load this one,
which registers the same four endpoints (``<base_url>h5web/{attr,data,meta,paths}``, served
from the server's ``root_dir`` as jupyterlab-h5web does); each hands its first request to
jupyterlab-h5web's own handler, imported then. The HDF5 viewer in JupyterLab (the lab
extension) is not touched.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from jupyter_server.utils import url_path_join
from tornado.web import RequestHandler

#: endpoint -> jupyterlab-h5web's handler class (jupyterlab_h5web/handlers.py ``setup_handlers``)
ENDPOINTS = {"attr": "AttributeHandler", "data": "DataHandler", "meta": "MetadataHandler", "paths": "PathsHandler"}
MODULE = "jupyterlab_h5web.handlers"


def deferred_handler(module: str, name: str) -> type[RequestHandler]:
    """A handler class whose instances are ``module.name``'s, that module imported at the first request.

    Tornado builds one handler per request by calling the registered class; this
    class's ``__new__`` returns the real handler, built with the same arguments.
    """

    def __new__(cls, application, request, **kwargs):
        real = getattr(importlib.import_module(module), name)
        return real(application, request, **kwargs)

    return type(f"Deferred{name}", (RequestHandler,), {"__new__": __new__, "__module__": __name__})


def handlers(base_url: str, root_dir: str) -> list[tuple]:
    """The tornado rules: jupyterlab-h5web's endpoints, each deferred."""
    return [(url_path_join(base_url, "h5web", endpoint), deferred_handler(MODULE, name), {"base_dir": Path(root_dir)})
            for endpoint, name in ENDPOINTS.items()]


def _load_jupyter_server_extension(serverapp):
    serverapp.web_app.add_handlers(".*$", handlers(serverapp.web_app.settings["base_url"], serverapp.root_dir))
    serverapp.log.info("daas-hub: HDF5 files are served from %s (jupyterlab-h5web, imported at the first "
                       "request)", serverapp.root_dir)


def _jupyter_server_extension_points():
    return [{"module": "daas_hub.lazy_h5web"}]
