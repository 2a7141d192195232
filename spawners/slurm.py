"""The Slurm backend: batchspawner's SlurmSpawner, driven by a checked request.

What differs from stock batchspawner 1.3.0 (docs/backend-slurm.md):

- The batch script is rendered from ``slurm_job.sh.j2`` (Jinja2, StrictUndefined)
  with variables from one pure function, :func:`job_script_vars`: partition,
  account/QOS per proposal, ``--cpus-per-task``, ``--mem``, ``--gres=gpu:N``,
  ``--time``, the profile's environment. ``user_options`` never reach it.
- Polling: all of a hub's Slurm sessions share one ``squeue`` call per interval
  (:class:`SqueueMonitor`), and a controller that does not answer keeps sessions
  in their last known state for ``controller_grace`` seconds.
- Progress names the job, its state, the queue position and the pending reason.
- The single-user server binds the node's address (``bind_address``), and reports
  its port through a handler that accepts the port and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from importlib import resources

import batchspawner  # noqa: F401 - registers its API handler, replaced below
import jinja2
from batchspawner import JobStatus
from batchspawner import SlurmSpawner as _BatchSlurmSpawner
from jupyterhub import apihandlers
from jupyterhub.apihandlers import APIHandler
from tornado import web
from traitlets import Dict, Float, List, Unicode, default

from daas_hub.options import SessionRequest
from daas_hub.profiles import Profile
from daas_hub.session import PLAN_ENV

from .common import SessionSetup, refuse, refuse_logged

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]*$")


# -- the batch script: a pure builder
@dataclass(frozen=True)
class JobSpec:
    job_name: str
    hub_user: str
    home: str
    output: str
    export: tuple[str, ...]
    partition: str
    account: str
    qos: str
    request: SessionRequest
    profile: Profile
    bind_address: str
    command: tuple[str, ...]
    extra_directives: tuple[str, ...] = ()


def job_script_vars(spec: JobSpec) -> dict:
    """Every variable of the job-script template, from the spec alone."""
    r = spec.request
    for what, value in (("partition", spec.partition), ("account", spec.account), ("qos", spec.qos),
                        ("job_name", spec.job_name)):
        if not NAME_RE.match(value):
            raise ValueError(f"Slurm {what} {value!r} may hold only letters, digits, '_', '.' and '-'")
    return {
        "job_name": spec.job_name,
        "hub_user": comment_text(spec.hub_user),
        "proposal": comment_text(r.proposal or "none"),
        "profile": comment_text(r.profile),
        "home": shlex.quote(spec.home),
        "output": shlex.quote(spec.output),
        "export": ",".join(spec.export) if spec.export else "NONE",
        "partition": spec.partition,
        "account": spec.account,
        "qos": spec.qos,
        "cpus": r.cpu,
        "memory_mb": max(1, r.memory // 1024**2),
        "gpus": r.gpu,
        "minutes": max(1, round(r.hours * 60)),
        "extra_directives": list(spec.extra_directives),
        "environment": spec.profile.slurm_environment or "# (none)",
        "apptainer_image": shlex.quote(spec.profile.apptainer_image) if spec.profile.apptainer_image else "",
        "bind_address": spec.bind_address,
        "command": shlex.join(spec.command),
    }


def comment_text(value: str) -> str:
    """``value`` safe on the script's comment line: anything but a name character becomes "?".

    A newline there would end the comment, and everything after it would run (or, before the
    ``#SBATCH`` lines, end them: sbatch stops reading directives at the first command).
    """
    return re.sub(r"[^A-Za-z0-9_.@+-]", "?", str(value))[:80]


_TEMPLATE_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def render_job_script(spec: JobSpec) -> str:
    text = resources.files("daas_hub.spawners").joinpath("slurm_job.sh.j2").read_text()
    return _TEMPLATE_ENV.from_string(text).render(**job_script_vars(spec))


# -- one squeue per interval for every session of the hub
@dataclass(frozen=True)
class JobView:
    state: str
    host: str
    reason: str


class SqueueMonitor:
    """A shared, coalesced view of the hub's Slurm jobs.

    ``lookup`` answers from the last ``squeue`` snapshot while it is younger than
    ``max_age``; otherwise one refresh runs for every caller at once. A failed
    refresh keeps the snapshot and records since when the controller is silent.
    """

    def __init__(self, argv: list[str], env: dict, timeout: float = 30):
        self.argv = argv
        self.env = env
        self.timeout = timeout
        self.snapshot: dict[str, JobView] = {}
        self.fetched_at = float("-inf")  # monotonic time of the last good snapshot
        self.attempted_at = float("-inf")
        self.failing_since: float | None = None
        self.calls = 0
        self._submitted: dict[str, float] = {}
        self._inflight: asyncio.Future | None = None

    def note_submitted(self, job_id: str) -> None:
        self._submitted[job_id] = time.monotonic()

    async def _refresh(self) -> None:
        self.calls += 1
        self.attempted_at = time.monotonic()
        started = self.attempted_at
        code, out, err = await run_command(self.argv, env=self.env, timeout=self.timeout)
        if code != 0:
            if self.failing_since is None:
                self.failing_since = started
            raise ControllerSilent(err.strip().splitlines()[-1] if err.strip() else f"squeue exit {code}")
        snap = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 3 and parts[0]:
                snap[parts[0]] = JobView(parts[1], parts[2], parts[3] if len(parts) > 3 else "")
        self.snapshot = snap
        self.fetched_at = started
        self.failing_since = None

    async def lookup(self, job_id: str, *, max_age: float):
        """The job's view, None if Slurm no longer lists it; raises ControllerSilent."""
        now = time.monotonic()
        stale = now - self.attempted_at >= max_age
        unseen_new = job_id not in self.snapshot and self._submitted.get(job_id, float("-inf")) >= self.fetched_at
        if self._inflight is not None and not self._inflight.done():
            # a refresh is under way: its answer, not the older snapshot (after a hub restart
            # the older snapshot is empty, and every session would look gone)
            await asyncio.shield(self._inflight)
        elif stale or unseen_new:
            self._inflight = asyncio.ensure_future(self._refresh())
            await asyncio.shield(self._inflight)
        elif self.failing_since is not None:
            raise ControllerSilent("the controller did not answer the last squeue")
        return self.snapshot.get(job_id)


class ControllerSilent(Exception):
    """squeue did not answer (controller down, timeout)."""


_MONITORS: dict[tuple, SqueueMonitor] = {}


def monitor_for(argv: tuple[str, ...], env: dict) -> SqueueMonitor:
    key = (argv, env.get("SLURM_CONF", ""))
    if key not in _MONITORS:
        _MONITORS[key] = SqueueMonitor(list(argv), env)
    return _MONITORS[key]


async def run_command(argv: list[str], *, input: str | None = None, env: dict | None = None,
                      timeout: float = 30) -> tuple[int, str, str]:
    """Run ``argv`` (no shell), bounded by ``timeout``; (exit code, stdout, stderr)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        return 127, "", f"{argv[0]}: {e.strerror}"
    try:
        out, err = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, "", f"{argv[0]} did not answer within {timeout:g} s"
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# -- what is free now, per partition, for the form
@dataclass(frozen=True)
class PartitionFree:
    partition: str
    state: str
    cpus_idle: int
    cpus_total: int
    memory_free_mb: int
    gres: str


def parse_sinfo(text: str) -> list[PartitionFree]:
    """``sinfo -h -o '%R|%a|%C|%e|%G'`` output (one line per partition and node state) summed per partition."""
    out: dict[str, list] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5:
            continue
        name, avail, cpus, free_mem, gres = parts[:5]
        try:
            _alloc, idle, _other, total = (int(x) for x in cpus.split("/"))
            mem = int(free_mem) if free_mem.isdigit() else 0
        except ValueError:
            continue
        row = out.setdefault(name, [avail, 0, 0, 0, gres])
        row[1] += idle
        row[2] += total
        row[3] += mem
    return [PartitionFree(n, r[0], r[1], r[2], r[3], r[4]) for n, r in out.items()]


async def free_per_partition(env: dict, timeout: float = 10) -> list[PartitionFree] | None:
    """What is free now on the cluster, or None when sinfo does not answer."""
    code, out, _ = await run_command(["sinfo", "-h", "-o", "%R|%a|%C|%e|%G"], env=env, timeout=timeout)
    return parse_sinfo(out) if code == 0 else None


# -- the port report from the session (replaces batchspawner's handler, which setattr()s anything)
class SessionPortHandler(APIHandler):
    """``POST /hub/api/batchspawner {"port": N}`` from the session's own token: sets the port only."""

    @web.authenticated
    def post(self):
        user = self.current_user
        token = self.get_auth_token()
        spawners = getattr(user, "spawners", None) or {}
        spawner = next((s for s in spawners.values() if s.api_token and s.api_token == token), None)
        if spawner is None:
            raise web.HTTPError(403, "This token belongs to no server of yours.")
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "The body is not JSON.") from None
        port = data.get("port") if isinstance(data, dict) else None
        if set(data) != {"port"} or not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise web.HTTPError(400, 'Expected {"port": <1-65535>} and nothing else.')
        spawner.port = port
        self.set_status(201)
        self.finish(json.dumps({"message": "port recorded"}))


apihandlers.default_handlers[:] = [
    (pattern, SessionPortHandler if pattern == r"/api/batchspawner" else handler, *rest)
    for pattern, handler, *rest in apihandlers.default_handlers
]


class SlurmSpawner(SessionSetup, _BatchSlurmSpawner):
    """Sessions as Slurm batch jobs, one per start; see the module docstring."""

    partition = Unicode(
        "", config=True,
        help="""Slurm partition for sessions; empty: the cluster's default. Example: ``"interactive"``""",
    )
    account = Unicode(
        "", config=True,
        help="""Slurm account charged for sessions whose proposal has no entry in ``proposal_accounts``.""",
    )
    qos = Unicode("", config=True, help="""Slurm QOS for sessions without a ``proposal_accounts`` entry.""")
    proposal_accounts = Dict(
        config=True,
        help="""Per proposal id, the Slurm account and/or QOS its sessions use.

        Example: ``{"MX-1001": {"account": "mx1001", "qos": "beamtime"}}``
        """,
    )
    job_name = Unicode(
        "daas-hub", config=True,
        help="""Slurm job name of every session; the shared squeue lists the jobs by this name.""",
    )
    extra_directives = List(
        Unicode(), config=True,
        help="""More ``#SBATCH`` lines, without the prefix. Example: ``["--constraint=ib"]``""",
    )
    bind_address = Unicode(
        "$(hostname -i | cut -d' ' -f1)", config=True,
        help="""The address the session listens on, as a shell word evaluated on the node; the hub
        must reach it. Example: ``"$(hostname -s).cluster.example"``. Default: the node's first address.
        """,
    )
    output_template = Unicode(
        "{home}/.daas-hub-slurm-%j.log", config=True,
        help="""Where Slurm writes the session's log (``{home}`` is the session's home, ``%j`` the job id).""",
    )
    slurm_conf = Unicode(
        "", config=True,
        help="""Path of slurm.conf when it is not in /etc/slurm (sets SLURM_CONF for every Slurm command).""",
    )
    submit_prefix = List(
        Unicode(), config=True,
        help="""Command prefix that runs ``sbatch`` as the session's account ({account} is replaced).
        Default: ``runuser --preserve-environment -u {account} --`` when the hub runs as root, else nothing (sbatch as the hub's user).
        """,
    )
    squeue_interval = Float(
        0, config=True,
        help="""Seconds a shared squeue snapshot is reused by every session's poll; 0: 0.9 x poll_interval.""",
    )
    squeue_jitter = Float(
        0.1, config=True,
        help="""Random fraction taken off ``squeue_interval`` each time, so hubs do not poll in step.""",
    )
    controller_grace = Float(
        300, config=True,
        help="""Seconds sessions keep their last known state while the Slurm controller does not
        answer; after that they are reported stopped. Example: ``900``.
        """,
    )
    command_timeout = Float(30, config=True, help="""Seconds any Slurm command may take before it counts as failed.""")

    @default("submit_prefix")
    def _default_submit_prefix(self):
        return ["runuser", "--preserve-environment", "-u", "{account}", "--"] if os.geteuid() == 0 else []

    @default("env_keep")
    def _default_env_keep(self):
        # JupyterHub 6 keeps almost nothing; sbatch needs to find its configuration
        return ["JUPYTERHUB_SINGLEUSER_APP", "SLURM_CONF", "LANG"]

    @default("default_url")
    def _default_default_url(self):
        return "/lab"

    @default("req_homedir")
    def _default_req_homedir(self):
        return self._home or ""

    _reason = ""

    def slurm_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "SLURM_CONF", "LANG")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env

    def user_env(self, env):
        # batchspawner looks the hub user up in pwd; the session runs as its own account
        env.update(self.session_env())
        return env

    def get_env(self):
        env = super().get_env()
        env[PLAN_ENV] = self._plan.to_json()
        env["PATH"] = os.pathsep.join([self.session_bin, "/usr/local/bin", "/usr/bin", "/bin"])
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env

    def job_spec(self, env_names) -> JobSpec:
        order = self._order
        per = self.proposal_accounts.get(order.request.proposal or "", {})
        return JobSpec(
            job_name=self.job_name,
            hub_user=self.user.name,
            home=self._home,
            output=self.output_template.format(home=self._home),
            export=tuple(sorted(env_names)),
            partition=self.partition,
            account=per.get("account", self.account),
            qos=per.get("qos", self.qos),
            request=order.request,
            profile=order.profile,
            bind_address=self.bind_address,
            command=(
                os.path.join(self.session_bin, "daas-hub-session"),
                os.path.join(self.session_bin, "batchspawner-singleuser"),
                os.path.join(self.session_bin, "jupyterhub-singleuser"),
                *self.get_args(),
            ),
            extra_directives=tuple(self.extra_directives),
        )

    async def start(self):
        if self._order is None:
            raise refuse("The Slurm backend is started through the daas spawner's form.", reason="no-order")
        self._prepare_session(self._order.account, self._order.proposals)
        return await super().start()

    async def submit_batch_script(self):
        env = self.get_env()
        script = render_job_script(self.job_spec(env.keys()))
        argv = [part.format(account=self._account.pw_name) for part in self.submit_prefix] + ["sbatch", "--parsable"]
        # the session's PATH is not the hub's: find the commands with the hub's own
        argv[0] = shutil.which(argv[0], path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or argv[0]
        self.log.info("Submitting %s's session to Slurm: %s", self._log_name, " ".join(argv))
        self.log.debug("Job script:\n%s", script)
        code, out, err = await run_command(argv, input=script, env=env, timeout=self.command_timeout)
        if code != 0:
            why = err.strip().splitlines()[-1] if err.strip() else f"sbatch exited with {code}"
            raise refuse_logged(self.log, f"The cluster did not accept the session. Contact {self.contact}.",
                                detail=f"sbatch for {self._log_name} exited with {code}: {why}", reason="sbatch",
                                status_code=503)
        self.job_id = self.parse_job_id(out.strip())
        self._monitor().note_submitted(self.job_id)
        return self.job_id

    def _monitor(self) -> SqueueMonitor:
        argv = ("squeue", "-h", f"--name={self.job_name}", "-o", "%i|%T|%B|%r")
        m = monitor_for(argv, self.slurm_env())
        m.timeout = self.command_timeout
        return m

    async def query_job_status(self):
        """This job's state (start and stop); polling uses the shared monitor instead."""
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        code, out, err = await run_command(
            ["squeue", "-h", "-j", self.job_id, "-o", "%T %B|%r"], env=self.slurm_env(), timeout=self.command_timeout,
        )
        if code == 0:
            line = out.strip()
            status, _, self._reason = line.partition("|")
            self.job_status = status
        elif "Invalid job id" in err:
            self.job_status = ""
        else:
            self.log.warning("squeue for job %s failed: %s", self.job_id, err.strip()[-300:])
            return JobStatus.UNKNOWN
        if self.state_isrunning():
            return JobStatus.RUNNING
        if self.state_ispending():
            return JobStatus.PENDING
        return JobStatus.NOTFOUND

    async def poll(self):
        if not self.job_id:
            return 0
        interval = self.squeue_interval or 0.9 * self.poll_interval
        max_age = interval * (1 - random.uniform(0, self.squeue_jitter))
        monitor = self._monitor()
        try:
            view = await monitor.lookup(self.job_id, max_age=max_age)
        except ControllerSilent as e:
            silent = time.monotonic() - (monitor.failing_since or time.monotonic())
            if silent < self.controller_grace:
                self.log.warning("Slurm controller silent for %.0f s (%s); keeping %s as it was",
                                 silent, e, self._log_name)
                return None
            self.log.warning("Slurm controller silent for %.0f s, longer than controller_grace; "
                             "reporting %s stopped", silent, self._log_name)
            self.clear_state()
            return 1
        if view is None:
            self.log.info("Slurm job %s of %s is gone", self.job_id, self._log_name)
            self.clear_state()
            return 1
        self.job_status = f"{view.state} {view.host}"
        self._reason = view.reason
        if self.state_isrunning() or self.state_ispending():
            return None
        self.clear_state()
        return 1

    async def cancel_batch_job(self):
        code, _, err = await run_command(["scancel", self.job_id], env=self.slurm_env(), timeout=self.command_timeout)
        if code != 0 and "Invalid job id" not in err:
            raise refuse_logged(self.log, f"Slurm did not cancel job {self.job_id}. Contact {self.contact}.",
                                detail=f"scancel {self.job_id} exited with {code}: {err.strip()[-300:]}",
                                reason="scancel", status_code=503)

    async def stop(self, now=False):
        if not self.job_id:
            return  # nothing to cancel: the job vanished and the state was cleared
        await super().stop(now=now)

    async def _queue_position(self) -> str:
        code, out, _ = await run_command(
            ["squeue", "-h", "-t", "PD", "--sort=-p,i", "-o", "%i"], env=self.slurm_env(), timeout=self.command_timeout,
        )
        ids = out.split() if code == 0 else []
        if self.job_id in ids:
            return f", position {ids.index(self.job_id) + 1} of {len(ids)} pending"
        return ""

    async def progress(self):
        said = None
        start = time.monotonic()
        while True:
            if not self.job_id:
                msg = "Submitting the session to Slurm"
            elif self.state_isrunning():
                host = self.job_status.split()[-1] if self.job_status.split() else "?"
                yield {"message": f"Slurm job {self.job_id} is running on {host}; waiting for JupyterLab to answer"}
                return
            elif self.state_ispending():
                reason = self._reason or "none given"
                msg = f"Slurm job {self.job_id} is pending (reason: {reason}{await self._queue_position()})"
            else:
                msg = f"Slurm job {self.job_id} submitted; waiting for its state"
            if time.monotonic() - start > 60:
                msg += f" - waiting for {int(time.monotonic() - start)} s"
            if msg != said:
                said = msg
                yield {"message": msg}
            await asyncio.sleep(1)
