"""``daas-hub-singleuser``: ``jupyterhub-singleuser`` without the start-up work a deployed session never uses.

Each lever was measured on its own (``benchmarks/session_start.py``):

- **No node at start.** Importing ``jupyterlab.labapp`` computes a version string
  through JupyterLab's app handler, whose default npm registry comes from
  ``node yarn.js config --json`` (about 90 MB and 0.2-0.4 CPU-s per start). The
  import runs with a ``PATH`` that has no node; the session gets its own ``PATH``
  back at once (terminals and kernels see it whole).
- **No language-server scan.** ``jupyter_lsp`` looks for language servers at start
  and runs ``npm prefix -g``; none are installed in sessions, so it is switched off
  (``ServerApp.jpserver_extensions``). A site that installs language servers switches it
  back on in the backend's session arguments, in ``jupyterhub_config.py``::

      c.LocalSpawner.args = ["--ServerApp.jpserver_extensions={'jupyter_lsp': True}"]

  (``c.SlurmSpawner.args`` for Slurm jobs). The site's own
  ``--ServerApp.jpserver_extensions`` arguments are merged into the sessions' switches,
  the site's values winning (:func:`session_args`); JupyterLab takes the option only once.
- **No IRI grammar.** ``jsonschema`` compiles the RFC 3987 grammar of
  ``rfc3987_syntax`` (a Lark parser) when first imported, for the ``iri`` format
  check that no Jupyter event schema uses (0.3-0.5 CPU-s). The server process
  skips that optional import; kernels are other processes and are not affected.

- **HDF5 endpoints at the first request.** jupyterlab-h5web's server extension imports
  h5py, numpy and h5grove at start (about 30 MB and 0.2 CPU-s); sessions load
  :mod:`daas_hub.lazy_h5web` in its place, which serves the same endpoints and imports
  jupyterlab-h5web's handlers when the HDF5 viewer first asks. A site that switches
  ``jupyterlab_h5web`` back on gets ``daas_hub.lazy_h5web`` switched off with it (both
  serve ``/h5web/``); both on is refused.

Build checks are off too (``labconfig/page_config.json`` in this package's data
files): a deployed JupyterLab is never rebuilt by its users.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager

#: server extensions switched off (on) in sessions, see the module
EXTENSIONS = {"jupyter_lsp": False, "jupyterlab_h5web": False, "daas_hub.lazy_h5web": True}
#: the two extensions serving the HDF5 viewer's endpoints (``/h5web/``): one of them at most
H5WEB, LAZY_H5WEB = "jupyterlab_h5web", "daas_hub.lazy_h5web"
#: the option, as traitlets takes it: ``OPTION=<value>`` or ``OPTION <value>``
OPTION = "--ServerApp.jpserver_extensions"
EXAMPLE = f"{OPTION}={{'jupyter_lsp': True}}"
_WORDS = {"true": True, "1": True, "false": False, "0": False}  # traitlets' Bool.from_string


class ArgumentError(ValueError):
    """A session argument daas-hub-singleuser cannot use; the message names it."""


def session_args(argv: Sequence[str] = (), *, h5web: bool) -> tuple[str, ...]:
    """The session's command line: ``argv`` with its own ``--ServerApp.jpserver_extensions``
    arguments taken out and merged into the sessions' switches (:data:`EXTENSIONS`), the
    site's values winning, then given once, first. ``h5web``: whether jupyterlab-h5web is
    installed (its endpoints are swapped for the deferred ones only then).

    Raises :class:`ArgumentError` for a value that is not a dict of extension names to
    booleans, and for both HDF5 extensions switched on."""
    extensions = dict(EXTENSIONS)
    if not h5web:
        del extensions[H5WEB], extensions[LAZY_H5WEB]
    site, rest = site_extensions(argv)
    if site.get(H5WEB) and LAZY_H5WEB not in site:
        extensions[LAZY_H5WEB] = False  # jupyterlab-h5web's own endpoints instead of the deferred ones
    extensions.update(site)
    if extensions.get(H5WEB) and extensions.get(LAZY_H5WEB):
        raise ArgumentError(
            f"{OPTION} switches on both {H5WEB} and {LAZY_H5WEB}, which serve the same HDF5 "
            f"endpoints (/h5web/): switch one of them off ({OPTION}={{'{H5WEB}': True}} alone "
            f"switches {LAZY_H5WEB} off).")
    return (f"{OPTION}={extensions!r}", *rest)


def site_extensions(argv: Sequence[str]) -> tuple[dict[str, bool], list[str]]:
    """The switches given by ``argv``'s ``--ServerApp.jpserver_extensions`` arguments, later
    ones winning, and the other arguments in their order. Both spellings traitlets takes:
    ``OPTION=<value>`` and ``OPTION <value>``; each value a dict (``{'jupyter_lsp': True}``)
    or one ``name=true|false`` item. Nothing after ``--`` is an option."""
    found: dict[str, bool] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg == OPTION:
            if i + 1 == len(argv):
                raise ArgumentError(f"{OPTION} is the last argument and has no value; give one, "
                                    f"for example {EXAMPLE}.")
            given, value = f"{arg} {argv[i + 1]}", argv[i + 1]
            i += 2
        elif arg.startswith(OPTION + "="):
            given, value = arg, arg[len(OPTION) + 1:]
            i += 1
        else:
            rest.append(arg)
            i += 1
            continue
        found.update(_switches(given, value))
    return found, rest


def _switches(given: str, value: str) -> dict[str, bool]:
    """One argument's value as switches, or :class:`ArgumentError` naming the argument."""
    problem = (f"the argument {given!r} cannot be used: its value must be a dict of server "
               f"extension names to True or False (or one name=true|false item), for example "
               f"{EXAMPLE}.")
    if value.lstrip().startswith("{"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ArgumentError(problem) from None
        if isinstance(parsed, dict) and all(isinstance(k, str) and k and isinstance(v, bool)
                                            for k, v in parsed.items()):
            return parsed
        raise ArgumentError(problem)
    name, sep, word = value.partition("=")
    if sep and name and word.lower() in _WORDS:
        return {name: _WORDS[word.lower()]}
    raise ArgumentError(problem)


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
    """The console script: ``argv`` (default: this command line) checked and merged first, so
    a malformed ``--ServerApp.jpserver_extensions`` is one sentence and exit code 2."""
    given = sys.argv[1:] if argv is None else argv
    try:
        args = session_args(given, h5web=importlib.util.find_spec(H5WEB) is not None)  # found, not imported
    except ArgumentError as e:
        print(f"daas-hub-singleuser: {e}", file=sys.stderr)
        return 2
    prepare()
    sys.argv = [sys.argv[0], *args]
    from jupyterhub.singleuser import main as singleuser

    return singleuser()


if __name__ == "__main__":
    sys.exit(main())
