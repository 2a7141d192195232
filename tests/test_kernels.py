"""Kernels run at their session's CPU priority (daas_hub/spawners/kernels.py).

The pure parts are in tests/test_kernels_units.py. Here the installed Jupyter server (this venv, its
``etc/jupyter/jupyter_server_config.d``) started as the local backend starts a
session: in a session of its own whose autogroup nice is 10
(:func:`daas_hub.spawners.burst.lower_priority`). A kernel started through the REST
API gets autogroup nice 10; with the server extension switched off, or with a
kernelspec naming jupyter_client's own provisioner, it stays at 0 (so the test
proves the lever). Skipped when this kernel has no autogroups.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from daas_hub.spawners.kernels import autogroup_nice

from conftest import free_port, make_world_dir, stop_process, wait_until

SESSION_NICE = 10


def autogroups_enabled() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def _session_priority():  # preexec_fn: what the local backend's make_preexec_fn does
    from daas_hub.spawners.burst import lower_priority

    lower_priority(SESSION_NICE)


def _kernelspec(data_dir: Path, name: str, *, provisioner: str | None) -> None:
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": name, "language": "python"}
    if provisioner:
        spec["metadata"] = {"kernel_provisioner": {"provisioner_name": provisioner}}
    (data_dir / "kernels" / name).mkdir(parents=True)
    (data_dir / "kernels" / name / "kernel.json").write_text(json.dumps(spec))


def kernel_autogroup_nice(extension: bool, kernel_name: str = "python3", environ: dict | None = None) -> int | None:
    """Start a server as a local session, one kernel in it; the kernel's autogroup nice."""
    home = make_world_dir("daas-kernels-")
    _kernelspec(home / "data", "plain", provisioner="local-provisioner")
    port, token = free_port(), "kernels-test"
    log = home / "server.log"
    env = {**os.environ, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
           "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    env.pop("JUPYTER_DEFAULT_PROVISIONER_NAME", None)
    env.update(environ or {})
    switch = [] if extension else ["--ServerApp.jpserver_extensions={'daas_hub.spawners.kernels': False}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home}",
         *(["--allow-root"] if os.geteuid() == 0 else []), *switch],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
        preexec_fn=_session_priority,
    )
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    kernels: list[psutil.Process] = []
    try:
        wait_until(lambda: session.get(f"{url}/api", timeout=2).ok, timeout=120, what="the server")
        assert autogroup_nice(proc.pid) == SESSION_NICE  # the session itself, as the local backend starts it
        r = session.post(f"{url}/api/kernels", json={"name": kernel_name}, timeout=60)
        assert r.status_code == 201, r.text[:500]

        def kernel_processes():
            kernels[:] = [p for p in psutil.Process(proc.pid).children(recursive=True)
                          if "ipykernel_launcher" in " ".join(p.cmdline())]
            return kernels

        wait_until(kernel_processes, timeout=60, what="the kernel's process")
        assert psutil.Process(kernels[0].pid).nice() == SESSION_NICE  # inherited either way
        return autogroup_nice(kernels[0].pid)
    finally:
        try:
            session.delete(f"{url}/api/kernels/{r.json()['id']}", timeout=30)
        except Exception:  # noqa: BLE001 - the kernel is stopped by its PID below
            pass
        stop_process(proc)
        for k in kernels:
            try:
                k.kill()
            except psutil.Error:
                pass
        if proc.returncode not in (0, -15, None):
            print(log.read_text()[-3000:])
        shutil.rmtree(home, ignore_errors=True)


needs_autogroups = pytest.mark.skipif(not autogroups_enabled(),
                                      reason="this kernel has no autogroups (sched_autogroup_enabled)")


@needs_autogroups
def test_a_kernel_gets_its_sessions_autogroup_nice():
    assert kernel_autogroup_nice(extension=True) == SESSION_NICE


@needs_autogroups
def test_without_the_extension_a_kernel_is_at_nice_0():
    assert kernel_autogroup_nice(extension=False) == 0


@needs_autogroups
def test_a_site_that_chose_a_provisioner_keeps_it():
    """The off switch of docs/local-backend.md: JUPYTER_DEFAULT_PROVISIONER_NAME in the session's environment."""
    assert kernel_autogroup_nice(extension=True, environ={"JUPYTER_DEFAULT_PROVISIONER_NAME": "local-provisioner"}) == 0


@needs_autogroups
def test_a_kernelspec_naming_its_own_provisioner_keeps_it():
    assert kernel_autogroup_nice(extension=True, kernel_name="plain") == 0


@pytest.fixture
def site(fresh_demo_site):
    return fresh_demo_site


@pytest.mark.hub
@needs_autogroups
def test_through_the_hub_a_sessions_kernel_has_the_session_nice(site):
    """The real hub on the local backend, a session as its facility account (not root), a
    non-default ``session_nice`` (7): the session's kernel runs in an autogroup at nice 7."""
    from conftest import start_hub

    hub = start_hub(site, extra_args=["--LocalSpawner.session_nice=7"])
    try:
        hub.api("POST", "/users/alice")
        r = hub.api("POST", "/users/alice/server", json={})
        assert r.status_code in (201, 202), r.text
        hub.wait_ready("alice", timeout=240)
        r = hub.server_api("alice", "POST", "/kernels", json={"name": "python3"})
        assert r.status_code == 201, r.text[:500]

        def kernel():
            for p in psutil.Process(hub.proc.pid).children(recursive=True):
                try:
                    if "ipykernel_launcher" in " ".join(p.cmdline()) and p.environ().get("JUPYTERHUB_USER") == "alice":
                        return p
                except psutil.Error:
                    continue
            return None

        k = wait_until(kernel, timeout=60, what="alice's kernel")
        assert k.uids().real != 0
        assert autogroup_nice(k.pid) == 7
    finally:
        if hub.proc.poll() is None:
            hub.stop_all_servers()
        stop_process(hub.proc, timeout=60)
