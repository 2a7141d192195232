"""The Slurm backend end to end on a real single-node Slurm (tests/slurm_cluster.py).

Real JupyterHub + configurable-http-proxy + slurmctld/slurmd/munged on loopback;
sessions are Slurm jobs run as the unprivileged demo account, started through
the spawn form, reached through the proxy. Skipped (with the reason) where the
cluster cannot run: not root, or slurm-wlm/munge missing.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

import slurm_cluster
from conftest import make_world_dir, start_hub, stop_process, wait_until

pytestmark = pytest.mark.hub

POLL = 5  # seconds: c.Spawner.poll_interval in these tests


@pytest.fixture(scope="module")
def cluster():
    why = slurm_cluster.available()
    if why:
        pytest.skip(f"no Slurm test cluster: {why}")
    folder = make_world_dir("daas-hub-slurm-")
    c = slurm_cluster.start_cluster(folder)
    yield c
    for job in c.squeue():
        c.run("scancel", job[0], check=False)
    c.stop()
    shutil.rmtree(folder, ignore_errors=True)


def slurm_catalogue(path: Path) -> None:
    """The packaged catalogue, with environments that exist here (no `module` command), plus a
    profile written for a cluster with environment modules, which this one has not."""
    from daas_hub.profiles import default_catalogue_path

    doc = yaml.safe_load(default_catalogue_path().read_text())
    for p in doc["profiles"]:
        p.setdefault("slurm", {})["environment"] = f"export DAAS_PROFILE_ENV={p['slug']}"
    modules = {**doc["profiles"][0], "slug": "site-modules", "name": "Needs site modules",
               "slurm": {"environment": "module load pyfai/2026.9"}, "backends": ["slurm"]}
    doc["profiles"].append(modules)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def slurm_site(cluster):
    from daas_hub.demo import ensure_demo_site

    site = make_world_dir("daas-hub-slurmsite-")
    ensure_demo_site(site)
    slurm_catalogue(site / "profiles.yaml")
    doc = yaml.safe_load((site / "site.yaml").read_text())
    doc["profiles"]["catalogue"] = "profiles.yaml"
    doc["profiles"]["enabled"] = [*doc["profiles"]["enabled"], "site-modules"]
    doc["spawner"]["backend"] = "slurm"
    doc["spawner"]["backends"] = ["slurm", "local"]
    doc["spawner"]["slurm"] = {
        "slurm_conf": str(cluster.conf), "run_as": "daas-demo", "home_root": "homes", "partition": "debug",
        "proposal_accounts": {"MX-1001": {"account": "mx1001"}},
    }
    doc["quotas"] = {"proposals": {"EC-2002": {"cpu": 2}}}
    (site / "site.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    yield site
    shutil.rmtree(site, ignore_errors=True)


# the shipped settings otherwise: sessions outlive a hub restart without any option here
HUB_ARGS = [f"--Spawner.poll_interval={POLL}", "--Spawner.poll_jitter=0"]


@pytest.fixture(scope="module")
def slurm_hub(slurm_site, cluster, output_dir):
    h = start_hub(slurm_site, extra_args=HUB_ARGS)
    yield h
    if h.proc.poll() is None:
        h.stop_all_servers()
    stop_process(h.proc, timeout=60)
    shutil.copy(h.log, output_dir / "hub-slurm.log")
    (output_dir / "slurmctld.log").write_text(cluster.log("slurmctld"))
    (output_dir / "slurmd.log").write_text(cluster.log("slurmd"))
    for job_log in slurm_site.glob("homes/*/.daas-hub-slurm-*.log"):
        shutil.copy(job_log, output_dir / f"slurm-{job_log.parent.name}-{job_log.name.lstrip('.')}")


def our_jobs(cluster):
    return [j for j in cluster.squeue() if j[2] == "daas-hub"]


def job_details(cluster, job_id) -> str:
    return cluster.run("scontrol", "show", "job", job_id).stdout


def server_gone(hub, user, server=""):
    model = hub.api("GET", f"/users/{user}").json()
    return server not in model.get("servers", {})


def test_spawn_through_the_form_runs_a_slurm_job_with_the_chosen_resources(slurm_hub, cluster):
    session = slurm_hub.signed_in("alice")
    # the form never waits for sinfo: "unknown" until the background figure arrives
    figure = r"debug \(up\): \d+ of 8 CPUs idle, [0-9.]+ GiB free, gpu:1"
    wait_until(lambda: re.search(figure, session.get(f"{slurm_hub.url}/hub/spawn", timeout=60).text),
               timeout=60, interval=1, what="sinfo's figure in the form")
    form = slurm_hub.spawn_form(session, "alice")
    assert form["backend"] == "slurm" and form["proposal"] == "MX-1001"
    r = slurm_hub.submit_form(session, "alice", profile="diffraction", cpu=2, memory=3, gpu=1, hours=1.5)
    assert r.status_code == 200, r.text[:500]
    slurm_hub.wait_ready("alice", timeout=180)
    try:
        (job,) = our_jobs(cluster)
        details = job_details(cluster, job[0])
        assert "UserId=daas-demo(" in details
        assert "Partition=debug" in details and "Account=mx1001" in details
        assert re.search(r"NumCPUs=2\b", details) and "CPUs/Task=2" in details
        assert "mem=3G" in details or "MinMemoryNode=3G" in details, details
        assert "gres/gpu=1" in details or "gpu:1" in details, details
        assert "TimeLimit=01:30:00" in details
        # JupyterLab through the proxy, with the proposals folder
        r = slurm_hub.server_api("alice", "GET", "/contents/proposals")
        assert r.status_code == 200, r.text
        assert {c["name"] for c in r.json()["content"]} == {"MX-1001", "HC-3003", "IH-5005"}
        # the batch script: the profile's environment, the resources, the node-bound server
        script = cluster.run("scontrol", "write", "batch_script", job[0], "-").stdout
        for line in ("#SBATCH --cpus-per-task=2", "#SBATCH --mem=3072M", "#SBATCH --gres=gpu:1",
                     "#SBATCH --time=90", "#SBATCH --partition=debug", "#SBATCH --account=mx1001",
                     "export DAAS_PROFILE_ENV=diffraction", 'export DAAS_HUB_BIND_ADDRESS="$(hostname -i'):
            assert line in script, script
        assert "user_options" not in script and "rm -rf" not in script
    finally:
        slurm_hub.stop_server("alice")
    wait_until(lambda: not our_jobs(cluster), timeout=60, what="the job cancelled by Stop")


def test_job_cancelled_behind_the_hub_is_shown_stopped_within_one_poll(slurm_hub, cluster):
    session = slurm_hub.signed_in("bob")
    assert slurm_hub.submit_form(session, "bob", cpu=1, memory=1).status_code == 200
    slurm_hub.wait_ready("bob", timeout=180)
    (job,) = [j for j in our_jobs(cluster)]
    cluster.run("scancel", job[0])
    t0 = time.monotonic()
    wait_until(lambda: server_gone(slurm_hub, "bob"), timeout=POLL * 2 + 20, interval=0.5,
               what="bob's server shown stopped")
    assert time.monotonic() - t0 <= POLL * 2 + 20
    # Stop on the vanished server succeeds (nothing to do), and Start works again
    r = slurm_hub.api("DELETE", "/users/bob/server")
    assert r.status_code in (204, 400), r.text
    assert slurm_hub.submit_form(session, "bob", cpu=1, memory=1).status_code == 200
    slurm_hub.wait_ready("bob", timeout=180)
    (job,) = our_jobs(cluster)
    cluster.run("scancel", job[0])  # and Stop right away, before the hub noticed
    slurm_hub.stop_server("bob")
    assert not our_jobs(cluster)


def test_silent_controller_marks_no_server_stopped_within_the_grace_period(slurm_hub, cluster):
    session = slurm_hub.signed_in("carol")
    assert slurm_hub.submit_form(session, "carol", cpu=1, memory=1).status_code == 200
    slurm_hub.wait_ready("carol", timeout=180)
    try:
        cluster.stop_controller()
        try:
            time.sleep(POLL * 4)  # four poll intervals without an answer (grace: 300 s)
            model = slurm_hub.api("GET", "/users/carol").json()
            assert "" in model["servers"] and model["servers"][""]["ready"], model
            assert slurm_hub.server_api("carol", "GET", "/contents").status_code == 200
        finally:
            cluster.start_controller()
        assert "Slurm controller silent" in slurm_hub.log_text()
        time.sleep(POLL * 2)
        assert not server_gone(slurm_hub, "carol")
    finally:
        slurm_hub.stop_server("carol")


def test_a_new_start_while_the_controller_is_stopped_is_a_sentence_and_works_once_it_is_back(slurm_hub, cluster):
    """slurmctld stopped (its own process): a new start is refused with a sentence a person
    reads (through the REST API: never a 500, no traceback), and nothing is left of it: no
    server, no pending start, no job once slurmctld is back. Then the same start works.

    sbatch gives up by itself (MessageTimeout=5 in tests/slurm_cluster.py), within
    ``c.SlurmSpawner.command_timeout`` (30 s); either way the refusal is the same sentence
    (``controller_silent``), so the waits below are bounds, not margins."""
    slurm_hub.signed_in("dave")
    options = {"profile": "python", "cpu": 1, "memory": 1}
    cluster.stop_controller()
    try:
        r = slurm_hub.api("POST", "/users/dave/server", json=options)
        if r.status_code == 202:  # still submitting after the hub's slow_spawn_timeout: the progress stream says
            message = slurm_hub.progress("dave", until="not answering", timeout=90)[-1].get("message", "")
        else:
            assert r.status_code == 503, r.text
            message = r.json()["message"]
        assert "scheduler (Slurm) is not answering right now" in message, message
        assert "nothing was started" in message and "Traceback" not in message, message
        wait_until(lambda: server_gone(slurm_hub, "dave"), timeout=30, what="dave's refused start cleared")
        assert not slurm_hub.api("GET", "/users/dave").json().get("pending")
        assert "the Slurm controller did not answer" in slurm_hub.log_text()  # the admin reads why
    finally:
        cluster.start_controller()
    assert not [j for j in our_jobs(cluster) if "dave" in job_details(cluster, j[0])]
    r = slurm_hub.api("POST", "/users/dave/server", json=options)
    assert r.status_code in (201, 202), r.text
    slurm_hub.wait_ready("dave", timeout=180)
    slurm_hub.stop_server("dave")
    assert not our_jobs(cluster)


def test_quota_refusal_names_the_option_and_the_limit(slurm_hub, cluster):
    session = slurm_hub.signed_in("bob")
    r = slurm_hub.submit_form(session, "bob", proposal="EC-2002", profile="spectroscopy", cpu=4)
    assert r.status_code == 400
    text = re.sub(r"\s+", " ", r.text)
    assert "cpu: 4 CPU would exceed the quota of proposal EC-2002" in text
    assert "at most 2 CPU" in text
    # the same through the REST API: a 400 with the message, never a 500
    r = slurm_hub.api("POST", "/users/bob/server", json={"proposal": "EC-2002", "profile": "python", "cpu": 3})
    assert r.status_code == 400 and "quota of proposal EC-2002" in r.json()["message"], r.text
    r = slurm_hub.api("POST", "/users/bob/server", json={"cmd": "/bin/sh"})
    assert r.status_code == 400 and "cmd: unknown option" in r.json()["message"], r.text
    assert not our_jobs(cluster)


def test_progress_shows_the_job_the_queue_position_and_the_pending_reason(slurm_hub, cluster):
    blocker = cluster.run("sbatch", "--parsable", "--gres=gpu:1", "--job-name=blocker", "-o", "/dev/null",
                          "--uid=daas-demo", "--gid=daas-demo", "--wrap", "sleep 600").stdout.strip()
    try:
        session = slurm_hub.signed_in("alice")
        assert slurm_hub.submit_form(session, "alice", cpu=1, memory=1, gpu=1).status_code == 200
        messages = [e.get("message", "") for e in slurm_hub.progress("alice", until="pending (reason: Resources",
                                                                       timeout=60)]
        assert any(re.search(r"Slurm job \d+ is pending \(reason: Resources, position 1 of 1 pending\)", m)
                   for m in messages), messages
    finally:
        cluster.run("scancel", blocker, check=False)
    slurm_hub.wait_ready("alice", timeout=180)
    slurm_hub.stop_server("alice")


def test_a_job_that_dies_at_once_says_why_with_the_last_lines_of_its_log(slurm_hub, cluster):
    """A profile written for a cluster with environment modules, on one without: the job ends
    in under a second. The user reads why (the job log's last lines) as soon as the snapshot
    shows the job gone, well before the start timeout (300 s); nothing is left behind."""
    session = slurm_hub.signed_in("carol")
    assert slurm_hub.submit_form(session, "carol", profile="site-modules", cpu=1, memory=1).status_code == 200
    events = slurm_hub.progress("carol", until="ended before JupyterLab started", timeout=90)
    messages = [e.get("message", "") for e in events]
    failed = messages[-1]
    assert "ended before JupyterLab started" in failed, messages
    assert "module: command not found" in failed, failed
    assert re.search(r"\.daas-hub-slurm-\d+\.log in your home folder", failed), failed
    wait_until(lambda: server_gone(slurm_hub, "carol"), timeout=30, what="carol's failed server cleared")
    assert "module: command not found" in slurm_hub.log_text()  # the admin reads the same lines
    assert not our_jobs(cluster)
    # the next start, with a profile that works here, runs
    assert slurm_hub.submit_form(session, "carol", profile="python", cpu=1, memory=1).status_code == 200
    slurm_hub.wait_ready("carol", timeout=180)
    slurm_hub.stop_server("carol")


def test_port_reports_go_to_the_daas_handler_not_batchspawners(slurm_hub):
    """batchspawner's /hub/api/batchspawner handler sets any posted attribute (201 for any token);
    ours, registered through extra_handlers, refuses a token that belongs to no server."""
    r = slurm_hub.api("POST", "/batchspawner", json={"port": 8888})
    assert r.status_code == 403 and "belongs to no server" in r.text, r.text


def test_hub_restart_finds_the_running_session(cluster, output_dir):
    """Its own site and hub (stopped and started again here): passes alone and in any order."""
    from daas_hub.demo import ensure_demo_site

    site = make_world_dir("daas-hub-slurmrestart-")
    try:
        ensure_demo_site(site)
        slurm_catalogue(site / "profiles.yaml")
        doc = yaml.safe_load((site / "site.yaml").read_text())
        doc["profiles"]["catalogue"] = "profiles.yaml"
        doc["spawner"].update(backend="slurm", backends=["slurm", "local"])
        doc["spawner"]["slurm"] = {"slurm_conf": str(cluster.conf), "run_as": "daas-demo", "home_root": "homes",
                                   "partition": "debug"}
        (site / "site.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        first = start_hub(site, extra_args=HUB_ARGS)
        try:
            session = first.signed_in("alice")
            assert first.submit_form(session, "alice", cpu=1, memory=1).status_code == 200
            first.wait_ready("alice", timeout=180)
            (job,) = [j for j in our_jobs(cluster) if "daas-demo" in job_details(cluster, j[0])
                      and str(site) in job_details(cluster, j[0])]
        finally:
            # the hub's API address stays (the session calls it); cleanup_servers=False: the job keeps running
            hub_bind = re.search(r"hub_bind_url = '([^']+)'",
                                 (site / "test_jupyterhub_config.py").read_text()).group(1)
            stop_process(first.proc, timeout=60)
            shutil.copy(first.log, output_dir / "hub-before-restart.log")
        assert job[0] in [j[0] for j in our_jobs(cluster)]
        again = start_hub(site, extra_args=[*HUB_ARGS, f"--JupyterHub.hub_bind_url={hub_bind}"])
        try:
            model = again.wait_ready("alice", timeout=60)
            assert model["servers"][""]["ready"]
            assert again.server_api("alice", "GET", "/contents").status_code == 200
            again.stop_server("alice")
            assert job[0] not in [j[0] for j in our_jobs(cluster)]
        finally:
            stop_process(again.proc, timeout=60)
            shutil.copy(again.log, output_dir / "hub-after-restart.log")
    finally:
        for j in our_jobs(cluster):
            if str(site) in job_details(cluster, j[0]):
                cluster.run("scancel", j[0], check=False)
        shutil.rmtree(site, ignore_errors=True)


def test_slurm_session_writes_its_provenance_record(slurm_hub, cluster, slurm_site):
    """The job's daas-hub-session writes the record into the proposal's processed folder,
    with the profile's Slurm environment, and a start-again link for the same request."""
    processed = slurm_site / "data/id11/MX-1001/processed/.daas-hub/provenance"
    before = set(processed.glob("*.json")) if processed.is_dir() else set()
    session = slurm_hub.signed_in("alice")
    r = slurm_hub.submit_form(session, "alice", proposal="MX-1001", profile="diffraction", cpu=1, memory=2,
                              gpu=0, hours=1)
    assert r.status_code == 200, r.text[:500]
    slurm_hub.wait_ready("alice", timeout=180)
    try:
        (path,) = set(processed.glob("*.json")) - before
        record = json.loads(path.read_text())
        assert (record["backend"], record["profile"], record["proposal"]) == ("slurm", "diffraction", "MX-1001")
        assert record["resources"] == {"cpu": 1, "memory": 2.0, "gpu": 0, "hours": 1.0}
        assert "DAAS_PROFILE_ENV=diffraction" in record["software"]["environment"]
        assert "opt-profile=diffraction" in record["start_again_url"]
        assert "opt-backend=slurm" in record["start_again_url"]
    finally:
        slurm_hub.stop_server("alice")
    wait_until(lambda: not our_jobs(cluster), timeout=60, what="the job cancelled by Stop")
