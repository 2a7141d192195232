"""Pure builders and the shared squeue snapshot of the Slurm backend (no cluster).

squeue is scripted: the monitor's command runner is replaced by a function that
answers canned output (the conversation), and time is an injected clock, so no
test depends on wall-clock margins or on the order tests run in.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

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


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Squeue:
    """A scripted squeue: answers ``out`` (or fails with ``err``); ``gate`` holds the answer back."""

    def __init__(self, out: str = "", err: str = ""):
        self.out, self.err, self.calls = out, err, 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, argv, *, env=None, timeout=30):
        assert argv[0] == "squeue" and "-o" in argv
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return (1, "", self.err) if self.err else (0, self.out, "")


def line(job, state="RUNNING", host="node1", reason="None", name="daas-hub"):
    return f"{job}|{state}|{host}|{reason}|{name}\n"


@pytest.fixture
def monitors(monkeypatch):
    """Each test its own shared monitors and cluster figures (no state across tests)."""
    monkeypatch.setattr(slurm, "_MONITORS", {})
    monkeypatch.setattr(slurm, "_FIGURES", {})


def spawner(clock, squeue, job_id="7", **traits):
    sp = slurm.SlurmSpawner(user=SimpleNamespace(name="alice"), job_id=job_id, squeue_jitter=0, **traits)
    sp.clock = clock
    sp._monitor().run = squeue
    return sp


def test_squeue_output_gives_our_jobs_with_their_queue_position():
    text = (line(5, "PENDING", "n/a", "Priority", name="other") + line(9, "PENDING", "n/a", "Resources")
            + line(3, "RUNNING", "node2") + line(4, "PENDING", "n/a", "Priority", name="a|b"))
    assert slurm.parse_squeue(text, "daas-hub") == {
        "9": slurm.JobView("PENDING", "n/a", "Resources", position=2, pending=3),
        "3": slurm.JobView("RUNNING", "node2", "None"),
    }
    assert slurm.parse_squeue("garbage\n\n", "daas-hub") == {}


async def test_concurrent_lookups_wait_for_the_refresh_under_way():
    """Twenty lookups while one squeue is under way: all get its answer, one squeue runs,
    none reads the empty snapshot from before (after a hub restart it would say "gone")."""
    clock, squeue = Clock(), Squeue(line(7))
    squeue.gate = asyncio.Event()
    monitor = slurm.SqueueMonitor(["squeue", "-o", "x"], env={}, clock=clock)
    monitor.run = squeue
    lookups = [asyncio.ensure_future(monitor.lookup("7", max_age=10)) for _ in range(20)]
    await asyncio.sleep(0)
    squeue.gate.set()
    assert await asyncio.gather(*lookups) == [slurm.JobView("RUNNING", "node1", "None")] * 20
    assert squeue.calls == 1
    clock.t += 9.9
    assert await monitor.lookup("8", max_age=10) is None and squeue.calls == 1  # fresh: not listed, gone
    clock.t += 0.1
    await monitor.lookup("7", max_age=10)
    assert squeue.calls == 2  # one interval later: one more


async def test_monitor_keeps_the_last_state_while_squeue_fails():
    clock, squeue = Clock(), Squeue(line(7))
    monitor = slurm.SqueueMonitor(["squeue", "-o", "x"], env={}, clock=clock)
    monitor.run = squeue
    assert (await monitor.lookup("7", max_age=5)).state == "RUNNING"
    squeue.err = "slurm_load_jobs error: Unable to contact slurm controller\n"
    clock.t += 5
    with pytest.raises(slurm.ControllerSilent, match="Unable to contact slurm controller"):
        await monitor.lookup("7", max_age=5)
    assert monitor.failing_since == clock.t and monitor.snapshot["7"].state == "RUNNING"
    with pytest.raises(slurm.ControllerSilent):  # within the interval: no new squeue, still silent
        await monitor.lookup("7", max_age=5)
    assert squeue.calls == 2


async def test_a_job_submitted_after_the_snapshot_is_pending_not_gone(monitors):
    clock, squeue = Clock(), Squeue(line(7))
    sp = spawner(clock, squeue, job_id="7")
    assert await sp.poll() is None
    monitor = sp._monitor()
    monitor.note_submitted("8")  # sbatch answered after that squeue
    other = spawner(clock, squeue, job_id="8")
    assert await other.query_job_status() == slurm.JobStatus.PENDING and squeue.calls == 1
    clock.t += 3
    assert await other.poll() == 1  # the next snapshot does not list it: gone


async def test_poll_keeps_the_session_within_the_grace_period_then_reports_it_stopped(monitors):
    clock, squeue = Clock(), Squeue(line(7))
    sp = spawner(clock, squeue, controller_grace=300, squeue_interval=10)
    assert await sp.poll() is None
    squeue.err = "squeue: error: Socket timed out on send/recv operation\n"
    clock.t += 10
    assert await sp.poll() is None  # silent, within the grace period: still running
    clock.t += 299
    assert await sp.poll() is None
    clock.t += 2
    assert await sp.poll() == 1  # longer than controller_grace: stopped
    assert sp.job_id == ""


async def test_poll_reports_a_vanished_job_stopped(monitors):
    sp = spawner(Clock(), Squeue(line(8)), job_id="7")
    assert await sp.poll() == 1 and sp.job_id == ""


@pytest.mark.parametrize("state", ["pending", "starting", "running"])
async def test_one_squeue_per_interval_for_150_sessions(monitors, state):
    """Start's wait (query_job_status), progress and poll all read one snapshot."""
    clock = Clock()
    kind = {"pending": ("PENDING", "n/a", "Resources"), "starting": ("CONFIGURING", "node1", "None"),
            "running": ("RUNNING", "node1", "None")}[state]
    squeue = Squeue("".join(line(i, *kind) for i in range(150)))
    spawners = [spawner(clock, squeue, job_id=str(i), squeue_interval=27, squeue_start_interval=2)
                for i in range(150)]
    interval = 27 if state == "running" else 2
    for _ in range(3):  # three intervals, every session asking every half second
        for _ in range(int(interval * 2)):
            for sp in spawners:
                if state == "running":
                    await sp.poll()
                else:
                    await sp.query_job_status()
            clock.t += 0.5
    assert squeue.calls == 3  # one per interval, however many sessions ask


async def test_progress_names_the_job_the_queue_position_and_the_reason(monitors):
    clock = Clock()
    squeue = Squeue(line(6, "RUNNING", "node1", name="blocker") + line(7, "PENDING", "n/a", "Resources"))
    sp = spawner(clock, squeue)
    assert await sp.query_job_status() == slurm.JobStatus.PENDING
    events = sp.progress()
    assert (await events.__anext__())["message"] == "Slurm job 7 is pending (reason: Resources, position 1 of 1 pending)"
    squeue.out = line(7, "RUNNING", "node3")
    clock.t += 2
    assert await sp.query_job_status() == slurm.JobStatus.RUNNING and sp.state_gethost() == "node3"
    assert (await events.__anext__())["message"] == "Slurm job 7 is running on node3; waiting for JupyterLab to answer"
    await events.aclose()


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, fmt, *args):
        self.lines.append(fmt % args)


async def test_cluster_figures_never_wait_and_say_unknown_without_a_fresh_figure():
    from daas_hub.spawners.common import BackgroundFigure

    clock, log, answers = Clock(), Log(), [("debug", 8)]
    gate = asyncio.Event()

    async def fetch():
        await gate.wait()
        if not answers:
            raise RuntimeError("sinfo: error: Unable to contact slurm controller")
        return answers.pop()

    figure = BackgroundFigure(fetch, max_age=60, timeout=10, what="sinfo", log=log, clock=clock)
    assert figure.current() is None and figure.current() is None  # no figure yet: one refresh under way
    gate.set()
    await figure.settled()
    assert figure.current() == ("debug", 8) and figure.refreshes == 1
    clock.t += 60
    assert figure.current() is None  # stale: unknown, refreshing
    await figure.settled()
    assert figure.current() is None and "Unable to contact slurm controller" in log.lines[-1]


async def test_cluster_figures_fetch_is_bounded():
    from daas_hub.spawners.common import BackgroundFigure

    log = Log()

    async def never():
        await asyncio.Event().wait()

    figure = BackgroundFigure(never, max_age=60, timeout=0.01, what="sinfo", log=log)
    assert figure.current() is None
    await figure.settled()
    assert log.lines == ["sinfo gave no figure (no answer within 0.01 s); the form says unknown"]


@pytest.mark.parametrize("code,err,silent", [
    (1, "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)", True),
    (1, "sbatch: error: Slurm controller not responding, sleeping and retrying.", True),
    (1, "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", True),
    (124, "sbatch did not answer within 30 s", True),
    (1, "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     False),
    (1, "sbatch: error: invalid partition specified: nope", False),
    (127, "sbatch: No such file or directory", False),
])
def test_a_silent_controller_is_told_from_a_refused_job(code, err, silent):
    assert slurm.controller_silent(code, err) is silent
