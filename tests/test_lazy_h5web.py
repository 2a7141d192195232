"""The HDF5 endpoints of a session, imported at the first request (daas_hub/lazy_h5web.py).

A real JupyterLab server started with the sessions' server-extension switches
(:func:`daas_hub.spawners.singleuser.session_args`), on loopback, answering the
requests jupyterlab-h5web's viewer makes for a real HDF5 file. The viewer in a
browser is covered by tests/test_browser.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import requests

from conftest import free_port, make_world_dir, stop_process, wait_until

h5py = pytest.importorskip("h5py")
np = pytest.importorskip("numpy")

LAUNCH = ("import sys; from daas_hub.spawners import singleuser as s; s.prepare(); "
          "from jupyterlab.labapp import main; sys.argv[0] = 'jupyter-lab'; sys.exit(main())")


@pytest.fixture(scope="module")
def lab():
    from daas_hub.spawners.singleuser import session_args

    home = make_world_dir("daas-h5web-")
    with h5py.File(home / "scan.h5", "w") as f:
        f.create_dataset("entry/counts", data=np.arange(12, dtype="int32").reshape(3, 4))
        f["entry"].attrs["title"] = "scan 1"
    port, token = free_port(), "h5web-test"
    log = home / "server.log"
    env = {**os.environ, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / ".jupyter")}
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home}",
         *(["--allow-root"] if os.geteuid() == 0 else []), *session_args(h5web=True)],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    try:
        wait_until(lambda: session.get(f"{url}/api", timeout=2).ok, timeout=120, what="the session's server")
        yield url, session, log
    finally:
        stop_process(proc)
        shutil.rmtree(home, ignore_errors=True)


def test_jupyterlab_h5web_is_not_imported_at_start(lab):
    url, session, log = lab
    text = log.read_text()
    assert "imported at the first request" in text, text[-2000:]
    assert "Jupyterlab-h5web extension will serve" not in text  # its own extension stayed off


def test_the_viewer_reads_a_file_through_the_deferred_endpoints(lab):
    url, session, _ = lab
    meta = session.get(f"{url}/h5web/meta/", params={"file": "scan.h5", "path": "/entry"}, timeout=30)
    assert meta.status_code == 200, meta.text[:500]
    assert {c["name"] for c in meta.json()["children"]} == {"counts"}
    attrs = session.get(f"{url}/h5web/attr/", params={"file": "scan.h5", "path": "/entry"}, timeout=30)
    assert attrs.status_code == 200 and attrs.json() == {"title": "scan 1"}, attrs.text[:500]
    data = session.get(f"{url}/h5web/data/", params={"file": "scan.h5", "path": "/entry/counts",
                                                    "format": "json"}, timeout=30)
    assert data.status_code == 200 and data.json() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], data.text[:500]
    paths = session.get(f"{url}/h5web/paths/", params={"file": "scan.h5"}, timeout=30)
    assert paths.status_code == 200 and "/entry/counts" in paths.json(), paths.text[:500]


def test_a_missing_file_is_the_viewers_own_error_not_a_crash(lab):
    url, session, _ = lab
    r = session.get(f"{url}/h5web/meta/", params={"file": "nope.h5", "path": "/"}, timeout=30)
    assert r.status_code in (400, 404), r.text[:500]
    assert session.get(f"{url}/api", timeout=10).ok  # the server keeps answering


def test_deferred_handler_builds_the_real_one():
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
    from tornado.web import Application, RequestHandler

    from daas_hub.lazy_h5web import deferred_handler

    cls = deferred_handler("tornado.web", "RedirectHandler")
    assert issubclass(cls, RequestHandler)
    app = Application()
    request = HTTPServerRequest(start_line=RequestStartLine("GET", "/", "HTTP/1.1"),
                                 headers=HTTPHeaders({"Host": "localhost"}), connection=_Connection())
    handler = cls(app, request, url="/elsewhere")
    assert type(handler).__name__ == "RedirectHandler" and handler._url == "/elsewhere"


class _Connection:
    def set_close_callback(self, callback):
        pass

