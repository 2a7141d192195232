"""Pure builders of the Slurm backend: the job script and the sinfo summary (no cluster)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from daas_hub.options import SessionRequest
from daas_hub.profiles import load_catalogue

slurm = pytest.importorskip("daas_hub.spawners.slurm")

# a site's profile with an environment module (the shipped one has none: docs/profiles.md)
PROFILE = replace(load_catalogue().get("diffraction"), slurm_environment="module load pyfai/2026.9")


def spec(**changes):
    base = dict(
        job_name="daas-hub", hub_user="alice", home="/homes/alice", output="/homes/alice/.log-%j",
        export=("HOME", "JUPYTERHUB_API_TOKEN"), partition="", account="", qos="",
        request=SessionRequest("MX-1001", "diffraction", "slurm", 2, 3 * 1024**3, 0, 1.5),
        profile=PROFILE, bind_address="127.0.0.1", command=("/v/bin/daas-hub-session", "/v/bin/jupyterhub-singleuser"),
    )
    return slurm.JobSpec(**{**base, **changes})


def test_simplest_job_script():
    assert slurm.render_job_script(spec()) == """\
#!/bin/bash
# daas-hub session daas-hub for alice: proposal MX-1001, profile diffraction
#SBATCH --job-name=daas-hub
#SBATCH --chdir=/homes/alice
#SBATCH --output=/homes/alice/.log-%j
#SBATCH --export=HOME,JUPYTERHUB_API_TOKEN
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=3072M
#SBATCH --time=90

set -eu
export HOME=/homes/alice
cd "$HOME"

# the profile's environment
module load pyfai/2026.9

# the single-user server listens on this node's address only
export DAAS_HUB_BIND_ADDRESS="127.0.0.1"
exec /v/bin/daas-hub-session /v/bin/jupyterhub-singleuser
"""


def test_partition_account_qos_gpus_and_extra_directives():
    r = SessionRequest(None, "diffraction", "slurm", 1, 1024**3, 1, 0.25)
    text = slurm.render_job_script(spec(partition="gpu", account="mx1001", qos="beamtime", request=r,
                                        extra_directives=("--constraint=ib",)))
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=mx1001", "#SBATCH --qos=beamtime",
                 "#SBATCH --gres=gpu:1", "#SBATCH --time=15", "#SBATCH --constraint=ib", "proposal none"):
        assert line in text


@pytest.mark.parametrize("field", ["partition", "account", "qos", "job_name"])
def test_names_with_shell_or_newlines_are_refused(field):
    with pytest.raises(ValueError, match=field):
        slurm.render_job_script(spec(**{field: "x\n#SBATCH --uid=0"}))


def test_home_with_spaces_is_quoted():
    assert "#SBATCH --chdir='/homes/a b'" in slurm.render_job_script(spec(home="/homes/a b"))


def test_sinfo_summary_sums_node_states_per_partition():
    text = "debug*|up|2/6/0/8|20000|gpu:1\ndebug*|up|0/8/0/8|1000|gpu:1\nbatch|up|0/8/0/8|21000|(null)\n"
    assert slurm.parse_sinfo(text) == [
        slurm.PartitionFree("debug*", "up", 14, 16, 21000, "gpu:1"),
        slurm.PartitionFree("batch", "up", 8, 8, 21000, "(null)"),
    ]


async def test_monitor_callers_wait_for_the_refresh_under_way(tmp_path):
    """A slow squeue (scripted: sleeps, then lists job 7): every concurrent lookup gets its answer,
    none reads the empty snapshot from before, and only one squeue runs."""
    import asyncio

    fake = tmp_path / "squeue"
    calls = tmp_path / "calls"
    fake.write_text("#!/bin/sh\n")  # first: no job listed yet
    fake.chmod(0o755)
    monitor = slurm.SqueueMonitor([str(fake)], env={})
    assert await monitor.lookup("7", max_age=0) is None
    fake.write_text(f"#!/bin/sh\necho x >> {calls}\nsleep 0.5\necho '7|RUNNING|node1|None'\n")
    await asyncio.sleep(0.1)
    first = asyncio.ensure_future(monitor.lookup("7", max_age=0.05))  # stale: refreshes
    await asyncio.sleep(0.2)  # the refresh is under way now
    views = [*await asyncio.gather(*(monitor.lookup("7", max_age=10) for _ in range(19))), await first]
    assert views == [slurm.JobView("RUNNING", "node1", "None")] * 20
    assert len(calls.read_text().split()) == 1
    assert await monitor.lookup("8", max_age=10) is None  # not listed: gone


async def test_monitor_keeps_the_last_state_while_squeue_fails(tmp_path):
    fake = tmp_path / "squeue"
    fake.write_text("#!/bin/sh\necho '7|RUNNING|node1|None'\n")
    fake.chmod(0o755)
    monitor = slurm.SqueueMonitor([str(fake)], env={})
    assert (await monitor.lookup("7", max_age=0)).state == "RUNNING"
    fake.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n")
    with pytest.raises(slurm.ControllerSilent, match="Unable to contact slurm controller"):
        await monitor.lookup("7", max_age=0)
    assert monitor.failing_since is not None and monitor.snapshot["7"].state == "RUNNING"


async def test_poll_keeps_the_session_within_the_grace_period_then_reports_it_stopped(tmp_path, monkeypatch):
    """Scripted squeue on PATH: answers once, then the controller is silent."""
    import asyncio
    from types import SimpleNamespace

    fake = tmp_path / "squeue"
    fake.write_text("#!/bin/sh\necho '7|RUNNING|node1|None'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))  # its own shared monitor
    spawner = slurm.SlurmSpawner(user=SimpleNamespace(name="alice"), job_id="7", controller_grace=1.0,
                                 squeue_interval=0.01, squeue_jitter=0)
    assert await spawner.poll() is None
    fake.write_text("#!/bin/sh\necho 'squeue: error: Socket timed out on send/recv operation' >&2\nexit 1\n")
    await asyncio.sleep(0.05)
    assert await spawner.poll() is None  # silent, within the grace period: still running
    await asyncio.sleep(1.1)
    assert await spawner.poll() == 1  # longer than controller_grace: stopped
    assert spawner.job_id == ""


async def test_poll_reports_a_vanished_job_stopped(tmp_path, monkeypatch):
    from types import SimpleNamespace

    fake = tmp_path / "squeue"
    fake.write_text("#!/bin/sh\necho '8|RUNNING|node1|None'\n")  # job 7 is not listed
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    spawner = slurm.SlurmSpawner(user=SimpleNamespace(name="alice"), job_id="7", squeue_interval=0.01)
    assert await spawner.poll() == 1 and spawner.job_id == ""
