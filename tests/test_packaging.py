"""The distribution installs and works from a clean virtual environment.

``pip install .[hub,singleuser]`` into a new venv built with Debian's Python,
with the versions pinned by requirements/test.lock except JupyterHub, which is
5.5 here: the version the zero-to-jupyterhub chart 4.4.0 ships. The rest of the
suite runs on JupyterHub 6 (the lock), so both supported majors are exercised
end to end.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import REPO, make_world_dir, start_hub, stop_process

JUPYTERHUB_5 = "jupyterhub==5.5.4"


@pytest.fixture(scope="module")
def clean_venv():
    folder = make_world_dir("daas-hub-venv-")
    venv = folder / "venv"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    old_umask = os.umask(0o022)
    try:
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin/pip"), "install", "-q"]
        subprocess.run([*pip, "-r", str(REPO / "requirements/build.txt")], check=True, env=env)
        constraints = folder / "constraints.txt"
        lines = [line for line in (REPO / "requirements/test.lock").read_text().splitlines()
                 if not line.lower().startswith("jupyterhub==")]
        constraints.write_text("\n".join([*lines, JUPYTERHUB_5]) + "\n")
        src = folder / "src"  # build from a copy: the checkout stays clean
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "test-output", "build", "*.egg-info"))
        subprocess.run([*pip, "-c", str(constraints), f"{src}[hub,singleuser,demo]"],
                       check=True, env=env, timeout=900)
    finally:
        os.umask(old_umask)
    yield venv
    shutil.rmtree(folder, ignore_errors=True)


def test_imports_and_entry_points(clean_venv):
    code = (
        "import daas_hub.spawners, daas_hub.authenticators, daas_hub.proxies\n"
        "import jupyterhub; print('jupyterhub', jupyterhub.__version__)\n"
        "from importlib.metadata import entry_points\n"
        "for group, name in [('jupyterhub.authenticators', 'daas-demo'), ('jupyterhub.spawners', 'daas-local'),"
        " ('jupyterhub.spawners', 'daas'), ('jupyterhub.spawners', 'daas-slurm'), ('jupyterhub.spawners', 'daas-kubernetes'),"
        " ('jupyterhub.authenticators', 'daas-oidc'), ('jupyterhub.authenticators', 'daas-multi'),"
        " ('jupyter_client.kernel_provisioners', 'daas-session-priority')]:\n"
        "    (ep,) = [e for e in entry_points(group=group) if e.name == name]\n"
        "    print(group, name, ep.load().__module__)\n"
    )
    out = subprocess.run([str(clean_venv / "bin/python"), "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    assert "jupyterhub 5.5.4" in out
    assert "daas-local daas_hub.spawners.local" in out
    assert "daas daas_hub.spawners.wrapper" in out and "daas-slurm daas_hub.spawners.slurm" in out
    assert "daas-kubernetes daas_hub.spawners.kubernetes" in out
    assert "daas-demo daas_hub.authenticators.demo" in out
    assert "daas-oidc daas_hub.authenticators.oidc" in out
    assert "daas-multi daas_hub.authenticators.multi" in out
    # desktops come from the session's server extension, enabled by a packaged config file
    enabled = clean_venv / "etc/jupyter/jupyter_server_config.d/daas_hub_proxies.json"
    assert '"daas_hub.proxies.extension": true' in enabled.read_text()
    # kernels at their session's CPU priority: the provisioner, made the default by its server extension
    assert "daas-session-priority daas_hub.spawners.kernels" in out
    kernels = clean_venv / "etc/jupyter/jupyter_server_config.d/daas_hub_kernels.json"
    assert '"daas_hub.spawners.kernels": true' in kernels.read_text()
    assert (clean_venv / "bin/daas-hub").exists() and (clean_venv / "bin/daas-hub-session").exists()


def test_spawn_refusals_keep_status_and_log_message_on_jupyterhub_5(clean_venv):
    """JupyterHub 5.5 has no SpawnException (added in 6.0): daas-hub's fallback keeps both."""
    code = (
        "from daas_hub.spawners import common\n"
        "assert common.SpawnException is common.CompatSpawnException\n"
        "e = common.refuse('The cluster is full.', reason='capacity', status_code=503, log_message='sbatch said 503')\n"
        "print(e.status_code, e.reason, '|', e.jupyterhub_message, '|', e.log_message, '|', e.get_message())\n"
    )
    out = subprocess.run([str(clean_venv / "bin/python"), "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    assert out.strip() == "503 capacity | The cluster is full. | sbatch said 503 | sbatch said 503"


@pytest.mark.hub
def test_demo_on_jupyterhub_5(clean_venv):
    """Login, spawn and the proposals folder on JupyterHub 5.5 (z2jh 4.4.0's hub)."""
    from daas_hub.demo import ensure_demo_site

    site = make_world_dir("daas-hub-site5-")
    ensure_demo_site(site)
    hub = start_hub(site, bin_dir=clean_venv / "bin")
    try:
        assert hub.api("GET", "/").json()["version"].startswith("5.5")
        r = hub.login("bob")
        assert r.status_code == 302, r.text[:300]
        session = r.session
        r = session.get(hub.url + r.headers["location"], timeout=60)
        assert 'id="daas-options"' in r.text, "the spawn form"
        assert hub.submit_form(session, "bob").status_code == 200
        hub.wait_ready("bob")
        r = hub.server_api("bob", "GET", "/contents/proposals")
        assert {c["name"] for c in r.json()["content"]} == {"MX-1001", "EC-2002"}
        assert hub.login("erin").status_code == 403
        hub.stop_server("bob")
    finally:
        stop_process(hub.proc, timeout=60)
        shutil.rmtree(site, ignore_errors=True)


@pytest.mark.hub
def test_oidc_login_on_jupyterhub_5(clean_venv, demo_site, output_dir):
    """UmbrellaID login (real oidc-provider), the conditions page, a refusal, on JupyterHub 5.5."""
    from test_login_oidc import oidc_hub_running, sign_in_without_browser

    with oidc_hub_running(demo_site, output_dir, bin_dir=clean_venv / "bin", tag="jh5") as hub:
        assert hub.api("GET", "/").json()["version"].startswith("5.5")
        r = sign_in_without_browser(hub, "umbrella", "bob")
        assert r.status_code == 200 and "/hub/conditions" in r.url, (r.url, r.text[:300])
        assert set(hub.api("GET", "/users/bob").json()["groups"]) == {"proposal-MX-1001", "proposal-EC-2002"}
        r = sign_in_without_browser(hub, "umbrella", "mallory")
        assert r.status_code == 403 and "is not linked to an account" in r.text
