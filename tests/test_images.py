"""The container images, built for real with podman and run as a facility account would.

Built by ``images/build.sh`` from a Debian base made with mmdebstrap (no container
registry is reachable here; a site builds FROM the pinned registry images named in the
Containerfiles). ``make test`` builds and tests the session base only; ``make images``
sets ``DAAS_HUB_IMAGES=all`` and tests every image (desktop, hub, technique images).

The session runs as an arbitrary uid/gid with a supplementary group, as Kubernetes'
runAsUser/runAsGroup/fsGroup give it (``podman run --user UID:GID --group-add GID``):
it gets a passwd entry and a home, reads the read-only raw mount, writes the processed
one through its group, and a real JupyterHub (with configurable-http-proxy) spawns it and
reaches it. The hub's spawner is JupyterHub's own ``SimpleLocalProcessSpawner`` whose
command is ``podman run``: the honest stand-in for a container backend, without touching
daas-hub's spawners (the Kubernetes backend is tested on its own).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import BIN, free_port, make_world_dir, stop_process, wait_until

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "images" / "build.sh"
ENV = {
    **os.environ,
    "CONTAINERS_CONF": str(REPO / "images" / "containers.conf"),
    "PYTHON": str(BIN / "python"),
}
PREFIX = os.environ.get("IMAGE_PREFIX", "localhost/daas-hub")
ALL = os.environ.get("DAAS_HUB_IMAGES") == "all"
UID, GID, TEAM = 4711, 4712, 4713  # no such accounts on the host or in the image

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (make apt-images)")

needs_all = pytest.mark.skipif(not ALL, reason="built and tested by `make images` (DAAS_HUB_IMAGES=all)")


def version() -> str:
    """The images' tag: ``VERSION`` as ``make images VERSION=...`` sets it, else the project's."""
    import tomllib
    return os.environ.get("VERSION") or tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def tag(name: str) -> str:
    return f"{PREFIX}/{name}:{version()}"


def podman(*args, timeout=120, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=check, **kw)


def build(*what: str) -> None:
    for step in what:
        cmd = [str(BUILD), *step.split()]
        r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-4000:]}"


@pytest.fixture(scope="module")
def base_image():
    build("base-os", "wheels", "image base")
    return tag("base")


@pytest.fixture(scope="module")
def all_images(base_image):
    names = subprocess.run([str(BUILD), "list"], env=ENV, capture_output=True, text=True, check=True).stdout.split()
    build("image " + " ".join(n for n in names if n != "base"))
    return names


@pytest.fixture(scope="module")
def facility_data():
    """Host folders standing for the facility storage: raw (read-only) and processed,
    the latter writable only through the team's group, as on a facility NFS export."""
    root = make_world_dir("daas-images-")
    raw, processed = root / "raw", root / "processed"
    raw.mkdir()
    (raw / "scan_0001.h5").write_text("raw data\n")
    processed.mkdir()
    os.chown(processed, 0, TEAM)
    processed.chmod(0o2770)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_as_facility_user(image: str, data: Path, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return podman(
        "run", "--rm", "--network", "none", "--user", f"{UID}:{GID}", "--group-add", str(TEAM),
        "-e", "NB_USER=alice",
        "-v", f"{data / 'raw'}:/data/raw:ro", "-v", f"{data / 'processed'}:/data/processed",
        image, *cmd, **kw,
    )


CHECKS = r"""
set -u
echo "whoami=$(whoami)"
echo "home=$HOME"
echo "pwd=$(pwd)"
echo "id=$(id)"
touch "$HOME/.written" && echo "home-writable=yes"
cat /data/raw/scan_0001.h5 >/dev/null && echo "raw-readable=yes"
touch /data/raw/new 2>/dev/null && echo "raw-writable=yes" || echo "raw-writable=no"
echo result > /data/processed/result.txt && echo "processed-writable=yes"
python -c 'import getpass, os, pwd; print("getpass=" + getpass.getuser(), "pw_dir=" + pwd.getpwuid(os.getuid()).pw_dir)'
python -c 'import h5py, hdf5plugin, jupyterlab, jupyterlab_h5web, daas_hub; print("imports=ok")'
"""


def parse(stdout: str) -> dict:
    out = {}
    for line in stdout.split():
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault(key, value)
    return out


def test_base_runs_as_any_uid_with_passwd_entry_and_home(base_image, facility_data):
    r = run_as_facility_user(base_image, facility_data, "bash", "-c", CHECKS)
    got = parse(r.stdout)
    assert got["whoami"] == "alice"
    assert got["home"] == got["pwd"] == got["pw_dir"] == "/home/alice"
    assert got["getpass"] == "alice"
    assert f"uid={UID}(alice)" in r.stdout and f"gid={GID}(alice)" in r.stdout
    assert f"{TEAM}(group{TEAM})" in r.stdout
    assert got["home-writable"] == "yes"
    assert got["raw-readable"] == "yes" and got["raw-writable"] == "no"
    assert got["processed-writable"] == "yes"
    assert got["imports"] == "ok"
    written = facility_data / "processed" / "result.txt"
    assert written.stat().st_uid == UID and written.stat().st_gid == TEAM  # setgid folder: the team's file


def test_base_refuses_root(base_image):
    r = podman("run", "--rm", "--network", "none", "--user", "0:0", base_image, "true", check=False)
    assert r.returncode == 64
    assert "does not run sessions as root" in r.stderr
    assert "Traceback" not in r.stderr


def test_base_image_user_and_size(base_image):
    info = json.loads(podman("image", "inspect", base_image).stdout)[0]
    assert info["Config"]["User"] == "1000:100"
    print(f"\n{base_image}: {info['Size'] / 1e6:.0f} MB")


HUB_CONFIG = """
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.JupyterHub.cookie_secret = bytes.fromhex("{cookie}")
c.ConfigurableHTTPProxy.auth_token = "{proxy_token}"
c.JupyterHub.db_url = "sqlite:///{dir}/hub.sqlite"
c.JupyterHub.pid_file = "{dir}/hub.pid"
c.JupyterHub.authenticator_class = "null"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "tester", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
    "scopes": ["admin:users", "admin:servers", "access:servers"]}}]
c.JupyterHub.spawner_class = "simple"
c.Spawner.ip = "127.0.0.1"
c.Spawner.port = {session_port}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.default_url = "/lab"
# the session container: the facility uid, its team's group, the proposal mounts; the
# hub's JUPYTERHUB_* variables are passed in (podman's -e NAME* copies them)
c.Spawner.cmd = [
    "podman", "run", "--rm", "--name", "{name}", "--network", "host",
    "--user", "{uid}:{gid}", "--group-add", "{team}",
    "-e", "JUPYTERHUB_*", "-e", "NB_USER=alice",
    "-v", "{data}/raw:/data/raw:ro", "-v", "{data}/processed:/data/processed",
    "{image}", "jupyterhub-singleuser",
]
c.Spawner.env_keep = ["PATH", "CONTAINERS_CONF"]
"""


@pytest.fixture
def image_hub(base_image, facility_data):
    """A real JupyterHub + configurable-http-proxy spawning the base image with podman."""
    work = make_world_dir("daas-image-hub-")
    port, token, name = free_port(), secrets.token_hex(16), f"daas-test-session-{secrets.token_hex(4)}"
    cfg = work / "jupyterhub_config.py"
    cfg.write_text(HUB_CONFIG.format(
        port=port, hub_port=free_port(), proxy_api=free_port(), session_port=free_port(),
        cookie=secrets.token_hex(32), proxy_token=secrets.token_hex(16), token=token, dir=work,
        name=name, uid=UID, gid=GID, team=TEAM, data=facility_data, image=base_image,
    ))
    env = {**ENV, "PATH": os.pathsep.join([str(BIN), ENV.get("PATH", "")])}
    env.pop("JUPYTERHUB_CRYPT_KEY", None)
    log = work / "hub.log"
    proc = subprocess.Popen([str(BIN / "jupyterhub"), "-f", str(cfg)], cwd=work, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            assert proc.poll() is None, f"the hub exited:\n{log.read_text()[-3000:]}"
            return requests.get(f"{url}/hub/health", timeout=2).ok
        wait_until(healthy, timeout=60, what="hub /hub/health")
        yield url, token, log
    finally:
        stop_process(proc, timeout=60)
        podman("rm", "-f", "--ignore", name, check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_hub_spawns_base_image_and_reaches_jupyterlab(image_hub):
    url, token, log = image_hub
    api = requests.Session()
    api.headers["Authorization"] = f"token {token}"
    assert api.post(f"{url}/hub/api/users/alice", timeout=10).status_code in (201, 409)
    t0 = time.monotonic()
    r = api.post(f"{url}/hub/api/users/alice/server", timeout=30)
    assert r.status_code in (201, 202), r.text

    def ready():
        user = api.get(f"{url}/hub/api/users/alice", timeout=10).json()
        server = user["servers"].get("")
        assert server is None or not server.get("stopped"), f"the session stopped:\n{log.read_text()[-3000:]}"
        return server and server["ready"]

    wait_until(ready, timeout=180, interval=0.5, what="the session container to be ready")
    started = time.monotonic() - t0
    # through configurable-http-proxy to the container's server, with the hub's token
    status = api.get(f"{url}/user/alice/api/status", timeout=10)
    assert status.status_code == 200, status.text
    assert "started" in status.json()
    lab = api.get(f"{url}/user/alice/lab", timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    assert "h5web" in api.get(f"{url}/user/alice/lab/api/extensions", timeout=10).text
    contents = api.get(f"{url}/user/alice/api/contents", timeout=10).json()
    assert contents["path"] == ""  # the server runs in the account's home
    print(f"\nbase session: hub spawn to ready in {started:.1f} s")
    assert api.delete(f"{url}/hub/api/users/alice/server", timeout=60).status_code in (202, 204)


@needs_all
def test_desktop_image_offers_the_desktop(all_images, facility_data):
    """The desktop image's JupyterLab lists the desktop entry (jupyter-server-proxy's servers-info)."""
    port, token, name = free_port(), secrets.token_hex(16), f"daas-test-desktop-{secrets.token_hex(4)}"
    proc = subprocess.Popen(
        ["podman", "run", "--rm", "--name", name, "--network", "host", "--user", f"{UID}:{GID}",
         "-e", "NB_USER=alice", tag("desktop"), "jupyter", "server", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"token {token}"}
    try:
        wait_until(lambda: requests.get(f"{url}/api/status", headers=headers, timeout=2).ok,
                   timeout=120, what="the desktop image's server")
        info = requests.get(f"{url}/server-proxy/servers-info", headers=headers, timeout=10).json()
        names = {s["name"] for s in info["server_processes"]}
        # daas-hub's extension adds the terminal application desktop only when Xvnc,
        # openbox and xterm are there (the base image has none)
        assert "apps/terminal/desktop-websockify" in names, names
    finally:
        podman("stop", "--ignore", "-t", "10", name, check=False)
        stop_process(proc)
    assert "desktops offered: desktop, terminal" in proc.stdout.read()


@needs_all
def test_hub_image_has_daas_hub_and_jupyterhub(all_images):
    r = podman("run", "--rm", "--network", "none", tag("hub"), "bash", "-c",
               "id -u; jupyterhub --version; python -c 'from importlib.metadata import entry_points; "
               "print(sorted(e.name for e in entry_points(group=\"jupyterhub.spawners\") if e.name.startswith(\"daas\")))'")
    uid, jh, spawners = r.stdout.split("\n")[:3]
    assert uid == "1000"
    assert jh.startswith(("5.", "6."))
    assert "daas" in spawners and "daas-slurm" in spawners


TECHNIQUES = sorted(p.parent.name for p in (REPO / "images").glob("*/smoke.sh"))


@needs_all
@pytest.mark.parametrize("name", TECHNIQUES)
def test_technique_image_works_as_facility_user(all_images, facility_data, name):
    smoke = (REPO / "images" / name / "smoke.sh").read_text()
    r = run_as_facility_user(tag(name), facility_data, "sh", "-c", smoke, check=False, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads(podman("image", "inspect", tag(name)).stdout)[0]
    print(f"\n{tag(name)}: {info['Size'] / 1e6:.0f} MB; {r.stdout.strip()}")


def test_image_start_benchmark_smoke(base_image):
    """benchmarks/image_start.py runs (one round); its figures are not asserted."""
    r = subprocess.run([str(BIN / "python"), str(REPO / "benchmarks" / "image_start.py"), "--rounds", "1"],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "base" in r.stdout and "/api/status" in r.stdout
