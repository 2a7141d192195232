"""The Slurm backend: batchspawner's SlurmSpawner, driven by a checked request.

What differs from stock batchspawner 1.3.0 (docs/backend-slurm.md):

- The batch script is rendered from ``slurm_job.sh.j2`` (Jinja2, StrictUndefined)
  with variables from one pure function, :func:`job_script_vars`: partition,
  account/QOS per proposal, ``--cpus-per-task``, ``--mem``, ``--gres=gpu:N``,
  ``--time``, the profile's environment. ``user_options`` never reach it.
- One ``squeue`` snapshot per interval (:class:`SqueueMonitor`) serves every
  session of the hub: ``start`` (waiting for the job to run), ``poll`` and
  ``progress`` read it through batchspawner's ``query_job_status`` hook. One
  output format, one parser (:func:`parse_squeue`), queue position and pending
  reason included. A controller that does not answer keeps sessions in their
  last known state for ``controller_grace`` seconds.
- Progress names the job, its state, the queue position and the pending reason.
- What is free per partition (``sinfo``) is a cached figure refreshed in the
  background (:meth:`SlurmSpawner.cluster_figures`); the form never waits for it.
- The single-user server binds the node's address (``bind_address``), and reports
  its port through :class:`SessionPortHandler`, which accepts the port and nothing
  else; the configure step registers it (``c.JupyterHub.extra_handlers``) when the
  Slurm backend is enabled.
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
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import jinja2
from batchspawner import JobStatus
from batchspawner import SlurmSpawner as _BatchSlurmSpawner
from batchspawner.api import BatchSpawnerAPIHandler
from jupyterhub import apihandlers
from jupyterhub.apihandlers import APIHandler
from tornado import web
from traitlets import Dict, Float, Int, List, Unicode, default

from daas_hub.options import SessionRequest
from daas_hub.profiles import Profile
from daas_hub.spawn_form import ClusterFigures

from .common import BackgroundFigure, SessionSetup, refuse, refuse_logged

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


def log_tail(path: str, lines: int, *, max_bytes: int = 16384) -> str:
    """The last ``lines`` lines of a job's log (read as the hub, bounded), or "" if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(line.rstrip() for line in text.splitlines()[-lines:]).strip("\n")


# -- one squeue snapshot per interval for every session of the hub
#: the one squeue output format: id, state, node, reason, name (the name last: it may hold "|")
SQUEUE_FORMAT = "%i|%T|%B|%r|%j"


@dataclass(frozen=True)
class JobView:
    state: str
    host: str
    reason: str
    position: int = 0  # among the cluster's pending jobs, by priority; 0: not pending
    pending: int = 0  # how many jobs are pending on the cluster


def squeue_argv() -> tuple[str, ...]:
    """Every job, highest priority first (squeue filters by name client-side anyway)."""
    return ("squeue", "-h", "--sort=-p,i", "-o", SQUEUE_FORMAT)


def parse_squeue(text: str, job_name: str) -> dict[str, JobView]:
    """``squeue -o SQUEUE_FORMAT`` output -> the views of the jobs named ``job_name``, by id."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|", 4)
        if len(parts) == 5 and parts[0]:
            rows.append(parts)
    pending = [r[0] for r in rows if r[1] == "PENDING"]
    where = {jid: i + 1 for i, jid in enumerate(pending)}
    return {
        jid: JobView(state, host, reason, where.get(jid, 0), len(pending) if jid in where else 0)
        for jid, state, host, reason, name in rows if name == job_name
    }


class ControllerSilent(Exception):
    """squeue did not answer (controller down, timeout)."""


#: what Slurm's commands print when slurmctld does not answer (as opposed to refusing a job)
SILENT_CONTROLLER = ("unable to contact slurm controller", "slurm controller not responding",
                     "socket timed out", "communication connection failure")


def controller_silent(code: int, err: str) -> bool:
    """Whether a Slurm command failed because the controller did not answer: its own
    message says so, or it did not finish within ``command_timeout`` (:func:`run_command`'s 124)."""
    text = err.lower()
    return code == 124 or any(words in text for words in SILENT_CONTROLLER)


#: lookup's answer for a job submitted after the snapshot was taken
NOT_YET = JobView("PENDING", "", "submitted; not yet listed by squeue")


class SqueueMonitor:
    """A shared, coalesced view of the hub's Slurm jobs.

    ``lookup`` answers from the last ``squeue`` snapshot while it is younger than
    ``max_age``; otherwise one refresh runs for every caller at once. A job
    submitted after the snapshot was taken is reported :data:`NOT_YET` (not gone).
    A failed refresh keeps the snapshot and records since when the controller is
    silent. ``clock`` is injectable (tests).
    """

    def __init__(self, argv, env: dict, *, job_name: str = "daas-hub", timeout: float = 30,
                 clock: Callable[[], float] = time.monotonic):
        self.argv = list(argv)
        self.env = env
        self.job_name = job_name
        self.timeout = timeout
        self.clock = clock
        self.snapshot: dict[str, JobView] = {}
        self.fetched_at = float("-inf")  # clock time of the last good snapshot
        self.attempted_at = float("-inf")
        self.failing_since: float | None = None
        self.calls = 0
        self._submitted: dict[str, float] = {}
        self._inflight: asyncio.Future | None = None
        self._inflight_started = float("-inf")
        self.run = run_command  # (argv, env=, timeout=) -> (code, out, err); tests script it

    def note_submitted(self, job_id: str) -> None:
        self._submitted[job_id] = self.clock()

    async def _refresh(self) -> None:
        self.calls += 1
        started = self.attempted_at = self.clock()
        code, out, err = await self.run(self.argv, env=self.env, timeout=self.timeout)
        if code != 0:
            if self.failing_since is None:
                self.failing_since = started
            raise ControllerSilent(err.strip().splitlines()[-1] if err.strip() else f"squeue exit {code}")
        self.snapshot = parse_squeue(out, self.job_name)
        self.fetched_at = started
        self.failing_since = None
        self._submitted = {j: t for j, t in self._submitted.items() if j not in self.snapshot and t >= started}

    async def lookup(self, job_id: str, *, max_age: float, newer_than: float | None = None) -> JobView | None:
        """The job's view, None if Slurm no longer lists it; raises ControllerSilent.

        ``newer_than``: the answer must come from a squeue started at or after that
        clock time (stop, after scancel).
        """
        now = self.clock()
        wanted = now - max_age if newer_than is None else max(newer_than, now - max_age)
        if self._inflight is not None and not self._inflight.done() and self._inflight_started >= wanted:
            # a refresh is under way: its answer, not the older snapshot (after a hub restart
            # the older snapshot is empty, and every session would look gone)
            await asyncio.shield(self._inflight)
        elif self.attempted_at <= wanted or (newer_than is not None and self.attempted_at < newer_than):
            if self._inflight is None or self._inflight.done():
                self._inflight_started = now
                self._inflight = asyncio.ensure_future(self._refresh())
            await asyncio.shield(self._inflight)
        elif self.failing_since is not None:
            raise ControllerSilent("the controller did not answer the last squeue")
        view = self.snapshot.get(job_id)
        if view is None and self._submitted.get(job_id, float("-inf")) >= self.fetched_at:
            return NOT_YET
        return view


_MONITORS: dict[tuple, SqueueMonitor] = {}


def monitor_for(argv: tuple[str, ...], env: dict, job_name: str) -> SqueueMonitor:
    key = (argv, env.get("SLURM_CONF", ""), job_name)
    if key not in _MONITORS:
        _MONITORS[key] = SqueueMonitor(argv, env, job_name=job_name)
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


def sinfo_fetcher(env: dict, timeout: float):
    """An async function giving what is free per partition; raises RuntimeError when sinfo fails."""

    async def fetch() -> tuple[PartitionFree, ...]:
        code, out, err = await run_command(["sinfo", "-h", "-o", "%R|%a|%C|%e|%G"], env=env, timeout=timeout)
        if code != 0:
            raise RuntimeError(err.strip().splitlines()[-1] if err.strip() else f"sinfo exit {code}")
        return tuple(parse_sinfo(out))

    return fetch


_FIGURES: dict[str, BackgroundFigure] = {}


# -- the port report from the session (batchspawner's own handler setattr()s anything posted)
class SessionPortHandler(APIHandler):
    """``POST /hub/api/batchspawner {"port": N}`` from the session's own token: sets the port only.

    Registered by the configure step through ``c.JupyterHub.extra_handlers``
    when the Slurm backend is enabled (:func:`daas_hub.config.apply_settings`).
    """

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


def _withdraw_batchspawner_handler() -> None:
    """Undo batchspawner's import-time side effect: batchspawner/api.py appends its handler
    (which ``setattr``s anything a session posts) to JupyterHub's API routes, ahead of every
    ``extra_handlers`` entry. JupyterHub imports every ``jupyterhub.spawners`` entry point
    (``daas-slurm`` among them) before it builds its routes, so this runs in time. Nothing is
    added here: :class:`SessionPortHandler` comes from the configure step's extra_handlers.
    """
    apihandlers.default_handlers[:] = [h for h in apihandlers.default_handlers if h[1] is not BatchSpawnerAPIHandler]


_withdraw_batchspawner_handler()


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
        help="""Slurm job name of every session; the shared squeue snapshot picks the hub's jobs by this name.""",
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
        help="""Seconds a shared squeue snapshot is reused by every running session's poll;
        0: 0.9 x poll_interval.
        """,
    )
    squeue_start_interval = Float(
        2.0, config=True,
        help="""Seconds a shared squeue snapshot is reused while sessions start (pending in the
        queue or waiting for their node): start and progress read it. One squeue per this
        interval for the whole hub, however many sessions wait. Example: ``5``.

        .. versionadded:: 0.2
        """,
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
    log_tail_lines = Int(
        10, config=True,
        help="""How many last lines of a session's job log the user sees (and the hub logs) when the
        job ends before JupyterLab starts. Example: ``20``.

        .. versionadded:: 0.2
        """,
    )
    command_timeout = Float(30, config=True, help="""Seconds any Slurm command may take before it counts as failed.""")
    sinfo_interval = Float(
        60, config=True,
        help="""Seconds the form's "free now on the cluster" figure stays fresh; it is refreshed
        in the background (``sinfo``, bounded by ``command_timeout``), and the form says
        "unknown" while there is no fresh figure. Example: ``120``.

        .. versionadded:: 0.2
        """,
    )

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

    _view: JobView | None = None
    clock: Callable[[], float] = staticmethod(time.monotonic)  # tests inject their own

    def slurm_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "SLURM_CONF", "LANG")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env

    # -- what is free on the cluster, for the form (a backend-provided, cached figure)
    @classmethod
    def cluster_figures(cls, config, log) -> ClusterFigures:
        """What the cluster last said it has free, if fresh; never waits (see ``sinfo_interval``).

        A class method: the form asks it with the hub's config, without building a spawner.
        """
        own = config.get(cls.__name__, {})
        traits = cls.class_traits()
        conf, interval, timeout = (own.get(n, traits[n].default_value)
                                   for n in ("slurm_conf", "sinfo_interval", "command_timeout"))
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "SLURM_CONF", "LANG")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        if conf:
            env["SLURM_CONF"] = conf
        key = env.get("SLURM_CONF", "")
        if key not in _FIGURES:
            _FIGURES[key] = BackgroundFigure(sinfo_fetcher(env, timeout), max_age=interval, timeout=timeout,
                                             what="sinfo", log=log)
        return ClusterFigures("slurm", _FIGURES[key].current())

    def user_env(self, env):
        # batchspawner looks the hub user up in pwd; the session runs as its own account
        env.update(self.session_env())
        return env

    def get_env(self):
        env = super().get_env()
        env.update(self.session_paths())
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
                os.path.join(self.session_bin, "daas-hub-singleuser"),  # jupyterhub-singleuser, cheaper start
                *self.get_args(),
            ),
            extra_directives=tuple(self.extra_directives),
        )

    async def start(self):
        """Submit, then wait on the shared snapshot until the job runs and JupyterLab reports
        its port. A job that ends first (a failing ``module load``, a missing program) is
        reported at once, with the last lines of its log, never after the start timeout."""
        if self._order is None:
            raise refuse("The Slurm backend is started through the daas spawner's form.", reason="no-order")
        self._prepare_session(self._order.account, self._order.proposals)
        self.ip = self.traits()["ip"].default_value
        self.port = self.traits()["port"].default_value
        if self.server:
            self.server.port = self.port
        await self.submit_batch_script()
        while True:
            status = await self.query_job_status()
            if status is JobStatus.NOTFOUND:
                raise self._ended_before_start()
            if status is JobStatus.RUNNING and self.port:
                break
            await asyncio.sleep(self.startup_poll_interval)
        self.ip = self.state_gethost()
        self.db.commit()
        self.log.info("Slurm job %s of %s runs on %s:%s", self.job_id, self._log_name, self.ip, self.port)
        return self.ip, self.port

    def job_log_path(self, job_id: str) -> str:
        return self.output_template.format(home=self._home or "~").replace("%j", job_id)

    def _ended_before_start(self):
        job_id, state = self.job_id, (self._view.state if self._view is not None else "no longer listed")
        path = self.job_log_path(job_id)
        tail = log_tail(path, self.log_tail_lines)
        self.log.error("Slurm job %s of %s ended before JupyterLab started (%s); last lines of %s:\n%s",
                       job_id, self._log_name, state, path, tail or "(nothing readable)")
        self.clear_state()
        shown = os.path.basename(path)
        message = (f"Your session's Slurm job {job_id} ended before JupyterLab started, so the session "
                   f"did not start and nothing was changed. ")
        if tail:
            message += f"The last lines of its log ({shown} in your home folder):\n{tail}\n"
        else:
            message += f"Its log ({shown} in your home folder) is empty or missing. "
        message += f"If the reason is not clear, contact {self.contact} and quote job {job_id}."
        return refuse(message, reason="job-ended", status_code=500)

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
            if controller_silent(code, err):
                raise refuse_logged(
                    self.log, f"The cluster's scheduler (Slurm) is not answering right now, so your session was "
                    f"not submitted and nothing was started. Try again in a few minutes; if it still fails, "
                    f"contact {self.contact}.",
                    detail=f"sbatch for {self._log_name}: the Slurm controller did not answer (exit {code}: {why})",
                    reason="scheduler-silent", status_code=503,
                )
            raise refuse_logged(self.log, f"The cluster did not accept the session. Contact {self.contact}.",
                                detail=f"sbatch for {self._log_name} exited with {code}: {why}", reason="sbatch",
                                status_code=503)
        self.job_id = self.parse_job_id(out.strip())
        self._monitor().note_submitted(self.job_id)
        return self.job_id

    def _monitor(self) -> SqueueMonitor:
        m = monitor_for(squeue_argv(), self.slurm_env(), self.job_name)
        m.timeout = self.command_timeout
        m.clock = self.clock
        return m

    def _max_age(self) -> float:
        """How old a snapshot this session accepts: short while it starts, the poll interval once running."""
        if self._view is None or self._view.state != "RUNNING":
            interval = self.squeue_start_interval
        else:
            interval = self.squeue_interval or 0.9 * self.poll_interval
        return interval * (1 - random.uniform(0, self.squeue_jitter))

    def _apply(self, view: JobView | None) -> None:
        self._view = view
        self.job_status = f"{view.state} {view.host}" if view is not None else ""

    async def query_job_status(self, *, newer_than: float | None = None):
        """batchspawner's hook, answered from the shared snapshot (start, poll and stop call it)."""
        if not self.job_id:
            self._apply(None)
            return JobStatus.NOTFOUND
        try:
            view = await self._monitor().lookup(self.job_id, max_age=self._max_age(), newer_than=newer_than)
        except ControllerSilent as e:
            self._silent = str(e)
            return JobStatus.UNKNOWN
        self._apply(view)
        if self.state_isrunning():
            return JobStatus.RUNNING
        if self.state_ispending():
            return JobStatus.PENDING
        return JobStatus.NOTFOUND

    def state_gethost(self):
        return self._view.host if self._view is not None else ""

    _silent = ""

    async def poll(self):
        if not self.job_id:
            return 0
        status = await self.query_job_status()
        if status is JobStatus.UNKNOWN:
            monitor = self._monitor()
            silent = monitor.clock() - (monitor.failing_since if monitor.failing_since is not None else monitor.clock())
            if silent < self.controller_grace:
                self.log.warning("Slurm controller silent for %.0f s (%s); keeping %s as it was",
                                 silent, self._silent, self._log_name)
                return None
            self.log.warning("Slurm controller silent for %.0f s, longer than controller_grace; "
                             "reporting %s stopped", silent, self._log_name)
            self.clear_state()
            return 1
        if status is JobStatus.NOTFOUND:
            path = self.job_log_path(self.job_id)
            self.log.info("Slurm job %s of %s has ended (%s); last lines of %s:\n%s", self.job_id, self._log_name,
                          self._view.state if self._view is not None else "no longer listed", path,
                          log_tail(path, self.log_tail_lines) or "(nothing readable)")
            self.clear_state()
            return 1
        return None

    def clear_state(self):
        super().clear_state()
        self._view = None

    async def cancel_batch_job(self):
        code, _, err = await run_command(["scancel", self.job_id], env=self.slurm_env(), timeout=self.command_timeout)
        if code != 0 and "Invalid job id" not in err:
            raise refuse_logged(self.log, f"Slurm did not cancel job {self.job_id}. Contact {self.contact}.",
                                detail=f"scancel {self.job_id} exited with {code}: {err.strip()[-300:]}",
                                reason="scancel", status_code=503)

    async def stop(self, now=False):
        """Cancel, then wait (up to 10 s) for squeue to stop listing the job; stops share their squeue."""
        if not self.job_id:
            return  # nothing to cancel: the job vanished and the state was cleared
        self.log.info("Stopping Slurm job %s of %s", self.job_id, self._log_name)
        await self.cancel_batch_job()
        if now:
            return
        for _ in range(10):
            asked = self._monitor().clock()
            if await self.query_job_status(newer_than=asked) not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                return
            await asyncio.sleep(1)
        self.log.warning("Slurm job %s of %s is still listed 10 s after scancel", self.job_id, self._log_name)

    async def progress(self):
        """Job, state, queue position and pending reason, from the snapshot start keeps fresh."""
        said = None
        start = self.clock()
        while True:
            view = self._view
            if not self.job_id:
                msg = "Submitting the session to Slurm"
            elif self.state_isrunning():
                yield {"message": f"Slurm job {self.job_id} is running on {self.state_gethost() or '?'}; "
                                  "waiting for JupyterLab to answer"}
                return
            elif self.state_ispending() and view is not None and view is not NOT_YET:
                where = f", position {view.position} of {view.pending} pending" if view.position else ""
                msg = f"Slurm job {self.job_id} is pending (reason: {view.reason or 'none given'}{where})"
            else:
                msg = f"Slurm job {self.job_id} submitted; waiting for its state"
            waited = self.clock() - start
            if waited > 60:
                msg += f" - waiting for {int(waited)} s"
            if msg != said:
                said = msg
                yield {"message": msg}
            await asyncio.sleep(1)
