"""``daas-hub-singleuser``: ``jupyterhub-singleuser`` without the start-up work a deployed session never uses.

Each lever was measured on its own (``benchmarks/session_start.py``):

- **No node at start.** Importing ``jupyterlab.labapp`` computes a version string
  through JupyterLab's app handler, whose default npm registry comes from
  ``node yarn.js config --json`` (about 90 MB and 0.2-0.4 CPU-s per start). The
  import runs with a ``PATH`` that has no node; the session gets its own ``PATH``
  back at once (terminals and kernels see it whole).
- **No language-server scan.** ``jupyter_lsp`` looks for language servers at start
  and runs ``npm prefix -g``; none are installed in sessions, so it is switched off
  (``ServerApp.jpserver_extensions``; a site that installs language servers sets
  ``c.DaasSpawner.args``/the session's own config to switch it back on).
- **No IRI grammar.** ``jsonschema`` compiles the RFC 3987 grammar of
  ``rfc3987_syntax`` (a Lark parser) when first imported, for the ``iri`` format
  check that no Jupyter event schema uses (0.3-0.5 CPU-s). The server process
  skips that optional import; kernels are other processes and are not affected.

- **HDF5 endpoints at the first request.** jupyterlab-h5web's server extension imports
  h5py, numpy and h5grove at start (about 30 MB and 0.2 CPU-s); sessions load
  :mod:`daas_hub.lazy_h5web` in its place, which serves the same endpoints and imports
  jupyterlab-h5web's handlers when the HDF5 viewer first asks.

Build checks are off too (``labconfig/page_config.json`` in this package's data
files): a deployed JupyterLab is never rebuilt by its users.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import contextmanager

#: server extensions switched off (on) in sessions, see the module
EXTENSIONS = {"jupyter_lsp": False, "jupyterlab_h5web": False, "daas_hub.lazy_h5web": True}


def session_args() -> tuple[str, ...]:
    """ServerApp options added to every session's command line. The HDF5 endpoints are
    swapped for the deferred ones only where jupyterlab-h5web is installed."""
    extensions = dict(EXTENSIONS)
    if importlib.util.find_spec("jupyterlab_h5web") is None:  # finds it without importing it
        del extensions["jupyterlab_h5web"], extensions["daas_hub.lazy_h5web"]
    return (f"--ServerApp.jpserver_extensions={extensions!r}",)


@contextmanager
def path_without_node():
    """``PATH`` reduced to the session's own ``bin`` folder (it holds no node), then restored."""
    saved = os.environ.get("PATH")
    os.environ["PATH"] = os.path.dirname(sys.executable)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved


def prepare() -> None:
    """Everything above, in this process, before the server is imported."""
    sys.modules.setdefault("rfc3987_syntax", None)  # jsonschema then skips the optional iri format check
    with path_without_node():
        import jupyterlab.labapp  # noqa: F401 - imported now, without node on PATH


def main(argv: list[str] | None = None):
    prepare()
    sys.argv = [sys.argv[0], *session_args(), *(sys.argv[1:] if argv is None else argv)]
    from jupyterhub.singleuser import main as singleuser

    return singleuser()


if __name__ == "__main__":
    sys.exit(main())
