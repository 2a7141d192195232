"""Faults around a class's sessions, on a real hub with the local backend.

Each test owns its site and hub (started and stopped here), so it passes alone and
in any order. Sessions are real JupyterLab servers; processes are found and
killed by their own PIDs. The Slurm side of the same faults (job cancelled behind
the hub, slurmctld silent within the grace period with a short injected grace,
hub restart finding the job) is in tests/test_slurm_hub.py; the provider outage
in tests/test_login_oidc.py; the catalogue outage at login in tests/test_hub_sql_source.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import psutil
import pytest
import requests

from conftest import start_hub, stop_process, wait_until

pytestmark = pytest.mark.hub

POLL = 2
HUB_ARGS = [f"--Spawner.poll_interval={POLL}", "--Spawner.poll_jitter=0"]


@pytest.fixture
def site(fresh_demo_site):
    return fresh_demo_site


def session_pid(hub, user) -> int:
    """The PID of ``user``'s session (a daas-hub-singleuser process started by this hub)."""
    for p in psutil.Process(hub.proc.pid).children(recursive=True):
        try:
            if "-singleuser" in " ".join(p.cmdline()) and p.environ().get("JUPYTERHUB_USER") == user:
                return p.pid
        except psutil.Error:
            continue
    raise LookupError(f"no session process for {user}")


def start_session(hub, user):
    hub.api("POST", f"/users/{user}")  # created by an admin (201), or already there (409)
    r = hub.api("POST", f"/users/{user}/server", json={})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(user, timeout=240)
    assert reachable(hub, user)


def reachable(hub, user) -> bool:
    """The user's own server answers through the proxy (its prefix, not any answer)."""
    try:
        return hub.server_api(user, "GET", "/status").status_code == 200
    except requests.RequestException:
        return False


def stop_everything(hub):
    if hub.proc.poll() is None:
        for u in hub.api("GET", "/users").json():
            for name in list(u.get("servers", {})):
                hub.stop_server(u["name"], server=name)
    stop_process(hub.proc, timeout=60)


def hub_bind(site) -> str:
    return re.search(r"hub_bind_url = '([^']+)'", (site / "test_jupyterhub_config.py").read_text()).group(1)


def test_hub_restart_finds_every_running_session_and_orphans_none(site, output_dir):
    """With ``cleanup_servers`` off (as for batch backends), local sessions outlive a hub restart."""
    args = [*HUB_ARGS, "--JupyterHub.cleanup_servers=False"]
    first = start_hub(site, extra_args=args)
    pids = {}
    try:
        for user in ("alice", "bob"):
            start_session(first, user)
            pids[user] = session_pid(first, user)
        bind = hub_bind(site)
    finally:
        stop_process(first.proc, timeout=60)
        shutil.copy(first.log, output_dir / "hub-faults-before-restart.log")
    try:
        assert all(psutil.pid_exists(pid) for pid in pids.values())  # still running while the hub is away
        again = start_hub(site, extra_args=[*args, f"--JupyterHub.hub_bind_url={bind}"])
        try:
            for user in pids:
                model = again.wait_ready(user, timeout=60)
                assert model["servers"][""]["ready"]
                wait_until(lambda u=user: reachable(again, u), timeout=30, what=f"{user} through the new proxy")
            for user in pids:
                again.stop_server(user)
            wait_until(lambda: not any(psutil.pid_exists(p) for p in pids.values()), timeout=30,
                       what="no session left running")
        finally:
            stop_everything(again)
            shutil.copy(again.log, output_dir / "hub-faults-after-restart.log")
    finally:
        for pid in pids.values():  # only if a step above failed
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


def test_shipped_restart_stops_local_sessions_and_shows_them_stopped(site):
    """The shipped local-only settings stop sessions with the hub: none is left running unseen."""
    first = start_hub(site, extra_args=HUB_ARGS)
    try:
        start_session(first, "alice")
        pid = session_pid(first, "alice")
    finally:
        stop_process(first.proc, timeout=60)
    wait_until(lambda: not psutil.pid_exists(pid), timeout=30, what="the session stopped with the hub")
    again = start_hub(site, extra_args=HUB_ARGS)
    try:
        assert "" not in again.api("GET", "/users/alice").json()["servers"]
        start_session(again, "alice")  # and it starts again
    finally:
        stop_everything(again)


def test_proxy_restarted_routes_come_back(site):
    hub = start_hub(site, extra_args=[*HUB_ARGS, "--ConfigurableHTTPProxy.check_running_interval=2"])
    try:
        start_session(hub, "alice")
        (proxy,) = [p for p in psutil.Process(hub.proc.pid).children()
                    if "configurable-http-proxy" in " ".join(p.cmdline())]
        proxy.kill()
        proxy.wait(10)
        # the hub sees its proxy gone at its next check, starts a new one and restores every route
        wait_until(lambda: reachable(hub, "alice"), timeout=60, what="alice's route restored")
        assert "Proxy stopped with exit code" in hub.log_text()  # a new proxy, not the old one answering
    finally:
        stop_everything(hub)


def test_killed_session_is_shown_stopped_leaves_nothing_and_restarts(site):
    hub = start_hub(site, extra_args=HUB_ARGS)
    try:
        start_session(hub, "carol")
        pid = session_pid(hub, "carol")
        children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: "" not in hub.api("GET", "/users/carol").json()["servers"],
                   timeout=POLL * 10, what="carol's server shown stopped")
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not any(psutil.pid_exists(c) and psutil.Process(c).status() != psutil.STATUS_ZOMBIE
                       for c in children)
        start_session(hub, "carol")
    finally:
        stop_everything(hub)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_full_home_is_a_sentence_and_the_hub_is_unaffected(site):
    """bob's home is a 1 MiB tmpfs made here, filled to the last block."""
    from daas_hub.demo import DEMO_ACCOUNT

    home = site / "homes" / "bob"
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(home)], check=True)
    try:
        shutil.chown(home, DEMO_ACCOUNT, DEMO_ACCOUNT)
        subprocess.run(["dd", "if=/dev/zero", f"of={home / 'big.bin'}", "bs=64k"], capture_output=True)
        hub = start_hub(site, extra_args=HUB_ARGS)
        try:
            hub.api("POST", "/users/bob")
            r = hub.api("POST", "/users/bob/server", json={})
            if r.status_code in (201, 202):  # refused after the POST answered: read it on the progress stream
                text = hub.api("GET", "/users/bob/server/progress", stream=True).text
            else:
                text = r.json()["message"]
            assert "Your home folder is full" in text, text
            assert "Traceback" not in text
            assert "" not in hub.api("GET", "/users/bob").json()["servers"]
            start_session(hub, "alice")  # the hub and other people are unaffected
            assert requests.get(f"{hub.url}/hub/health", timeout=5).ok
        finally:
            stop_everything(hub)
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_catalogue_down_known_users_keep_their_last_proposals(site):
    """The catalogue file disappears: a user the hub knows starts with the proposals it last read.

    (A first start while the catalogue does not answer is a sentence: tests/test_first_start.py.)"""
    hub = start_hub(site, extra_args=[*HUB_ARGS, "--DemoAuthenticator.auth_refresh_age=1"])
    catalogue = site / "proposals.yaml"
    saved = catalogue.read_text()
    try:
        start_session(hub, "alice")
        hub.stop_server("alice")
        catalogue.unlink()
        start_session(hub, "alice")
        names = {c["name"] for c in hub.server_api("alice", "GET", "/contents/proposals").json()["content"]}
        assert names == {"MX-1001", "HC-3003", "IH-5005"}
        hub.stop_server("alice")
    finally:
        catalogue.write_text(saved)
        stop_everything(hub)
