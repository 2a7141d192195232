"""The hub side of operations: session records, lifetimes, spawn log lines, metrics.

:class:`SessionOperations` is mixed into :class:`~daas_hub.spawners.wrapper.DaasSpawner`:
it writes each session into the operations store (:mod:`daas_hub.usage`) as it
is requested, starts, is polled and ends, logs one line when a spawn starts and
one when it ends, and stops a session whose lifetime (:mod:`daas_hub.lifetime`)
is over. The Prometheus metrics are registered with JupyterHub's registry, so
``/hub/metrics`` serves them next to the hub's own.
"""

from __future__ import annotations

import functools
import time
import uuid
from datetime import UTC, datetime

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from traitlets import Float, HasTraits, Unicode

from daas_hub.lifetime import Lifetime, Phase, extension_refusal, format_left
from daas_hub.operations import Operations
from daas_hub.options import SessionRequest
from daas_hub.quotas import GIB, total
from daas_hub.usage import OperationsStore

SPAWN_LABELS = ("backend", "profile", "proposal")

SPAWNS = Counter("daas_spawns_total", "Spawns requested, by backend, profile and proposal", SPAWN_LABELS)
SPAWN_FAILURES = Counter("daas_spawn_failures_total", "Spawns that failed, by backend, profile, proposal and reason",
                         (*SPAWN_LABELS, "reason"))
SOURCE_SECONDS = Histogram("daas_proposal_source_seconds", "Proposal-source lookups at login and refresh, seconds",
                           ("operation",))
SOURCE_ERRORS = Counter("daas_proposal_source_errors_total", "Proposal-source lookups that failed", ("operation",))


# -- the settings and the store, from the hub's configuration
_OPERATIONS: dict[int, tuple] = {}


def operations_for(config) -> Operations:
    """The operations settings from ``config`` (built once per configuration object)."""
    hit = _OPERATIONS.get(id(config))
    if hit is None or hit[0] is not config:
        hit = _OPERATIONS[id(config)] = (config, Operations(config=config))
    return hit[1]


def hub_operations() -> Operations:
    """The running hub's operations settings (for template variables and metrics)."""
    from jupyterhub.app import JupyterHub

    config = JupyterHub.instance().config if JupyterHub.initialized() else None
    return operations_for(config) if config is not None else Operations()


@functools.lru_cache(maxsize=4)
def store_at(path: str) -> OperationsStore:
    return OperationsStore(path)


# -- metrics: gauges from the store's open sessions, read when Prometheus scrapes
_sources: list = []


def watch_source(source) -> None:
    """Report the proposal cache's hits and misses (a source with ``stats``, :mod:`daas_hub.sources.cache`)."""
    ensure_collector()
    if getattr(source, "stats", None) is not None and source not in _sources:
        _sources.append(source)


def observe_source(operation: str, seconds: float, *, failed: bool) -> None:
    SOURCE_SECONDS.labels(operation).observe(seconds)
    if failed:
        SOURCE_ERRORS.labels(operation).inc()


class DaasCollector:
    """Running and pending sessions, requested CPUs, memory and GPUs, by backend, profile and proposal."""

    def collect(self):
        labels = [*SPAWN_LABELS, "state"]
        families = {
            "sessions": GaugeMetricFamily("daas_sessions", "Live sessions (running or pending)", labels=labels),
            "cpu": GaugeMetricFamily("daas_requested_cpus", "CPUs requested by live sessions", labels=labels),
            "memory": GaugeMetricFamily("daas_requested_memory_bytes", "Memory requested by live sessions",
                                        labels=labels),
            "gpu": GaugeMetricFamily("daas_requested_gpus", "GPUs requested by live sessions", labels=labels),
        }
        sums: dict[tuple, list[float]] = {}
        try:
            records = store_at(hub_operations().store).sessions(open_only=True)
        except Exception:  # noqa: BLE001 - a scrape never fails the hub; the gauges are just absent
            records = []
        for r in records:
            key = (r.backend, r.profile, r.proposal or "none", r.state)
            row = sums.setdefault(key, [0, 0, 0, 0])
            row[0] += 1
            row[1] += r.cpu
            row[2] += r.memory
            row[3] += r.gpu
        for key, (n, cpu, mem, gpu) in sums.items():
            families["sessions"].add_metric(key, n)
            families["cpu"].add_metric(key, cpu)
            families["memory"].add_metric(key, mem)
            families["gpu"].add_metric(key, gpu)
        yield from families.values()
        cache = CounterMetricFamily("daas_proposal_cache", "Proposal cache answers", labels=["result"])
        for result in ("hits", "misses", "stale", "errors"):
            cache.add_metric([result], sum(s.stats.get(result, 0) for s in _sources))
        yield cache


_collector: list = []


def ensure_collector() -> None:
    if not _collector:
        _collector.append(DaasCollector())
        REGISTRY.register(_collector[0])


# -- template variables (daas_hub.operations.hub_template_var)
def announcements(user):
    """The announcements shown now, for every hub page."""
    try:
        ops = hub_operations()
        return store_at(ops.store).announcements(ops.now())
    except Exception:  # noqa: BLE001 - a page renders even if the store cannot be read
        return []


def lifetimes(user):
    """Per live session of ``user``: the time left, for the home page."""
    if user is None:
        return []
    out = []
    for name, sp in sorted(user.spawners.items()):
        info = getattr(sp, "lifetime_info", None)
        if sp.active and info is not None:
            i = info()
            if i:
                out.append({"server": name, "url": user.server_url(name), **i})
    return out


# -- the spawner side
class SessionOperations(HasTraits):
    """Records, log lines and the lifetime of the wrapper's sessions (state keys ``rid``, ``started``)."""

    request_id = Unicode("")
    lifetime_started = Float(0)
    _end_reason = ""
    _spawn_t0 = 0.0

    @property
    def ops(self) -> Operations:
        return operations_for(self.config)

    @property
    def ops_store(self) -> OperationsStore:
        ensure_collector()
        return store_at(self.ops.store)

    def ops_get_state(self, state: dict) -> None:
        if self.request_id:
            state["rid"] = self.request_id
            state["started"] = self.lifetime_started

    def ops_load_state(self, state: dict) -> None:
        self.request_id = state.get("rid", "")
        self.lifetime_started = float(state.get("started", 0) or 0)

    def ops_clear(self) -> None:
        self.request_id = ""
        self.lifetime_started = 0

    def _fields(self, request: SessionRequest) -> dict:
        return {"request_id": self.request_id, "user": self.user.name, "server": self.name or "",
                "proposal": request.proposal or "none", "profile": request.profile, "backend": request.backend,
                "cpu": request.cpu, "memory_gib": round(request.memory / GIB, 3), "gpu": request.gpu,
                "hours": request.hours}

    def _log_spawn(self, what: str, fields: dict) -> None:
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        self.log.info("daas %s %s", what, text, extra={"daas": {"event": what, **fields}})

    def ops_requested(self, request: SessionRequest) -> None:
        self.request_id = uuid.uuid4().hex[:12]
        self._spawn_t0 = time.monotonic()
        self._end_reason = ""
        groups = sorted(g.name for g in getattr(self.user, "groups", []) or [])
        self.ops_store.requested(
            self.request_id, user=self.user.name, server=self.name or "", proposal=request.proposal,
            profile=request.profile, backend=request.backend, course=groups[0] if groups else "",
            cpu=request.cpu, memory=request.memory, gpu=request.gpu, hours=request.hours, now=self.ops.now())
        SPAWNS.labels(request.backend, request.profile, request.proposal or "none").inc()
        self._log_spawn("spawn-start", self._fields(request))

    def ops_spawned(self, request: SessionRequest, *, reason: str = "") -> None:
        """The child's start returned (``reason`` empty) or failed (``reason``: the refusal's)."""
        fields = {**self._fields(request), "outcome": "started" if not reason else f"failed:{reason}",
                  "duration_s": round(time.monotonic() - self._spawn_t0, 3)}
        now = self.ops.now()
        if reason:
            self.ops_store.ended(self.request_id, now, failed=True, detail=reason)
            SPAWN_FAILURES.labels(request.backend, request.profile, request.proposal or "none", reason).inc()
        else:
            self.ops_store.started(self.request_id, now)
            self.lifetime_started = now
        self._log_spawn("spawn-end", fields)

    def ops_progress(self, message: str) -> None:
        if self.request_id and message:
            self.ops_store.pending_detail(self.request_id, message)

    def ops_over(self, status) -> bool:
        """After the child's poll: record a running session as seen; True once its lifetime is over.

        The wrapper then stops it (``User.stop`` does not stop a server whose poll
        reports an exit status, so the wrapper must).
        """
        if status is not None or not self.request_id or not self.lifetime_started:
            return False
        now = self.ops.now()
        self.ops_store.seen(self.request_id, now)
        life = self.lifetime()
        if not (self.ops.enforce_lifetimes and life and life.phase(now, self.ops.lifetime_warning) is Phase.OVER):
            return False
        self._end_reason = "lifetime"
        self.log.info("daas lifetime-over request_id=%s user=%s server=%s hours=%s: stopping the session",
                      self.request_id, self.user.name, self.name or "", life.hours)
        return True

    def ops_stopped(self) -> None:
        if not self.request_id:
            return
        now = self.ops.now()
        record = self.ops_store.record(self.request_id)
        if record is None or record.state not in ("pending", "running"):
            return  # a failed start, already recorded
        self.ops_store.ended(self.request_id, now, detail=self._end_reason or "stopped")
        ran = now - record.started if record and record.started else 0
        self.log.info("daas session-end request_id=%s user=%s server=%s outcome=%s ran_s=%.1f",
                      self.request_id, self.user.name, self.name or "", self._end_reason or "stopped", ran,
                      extra={"daas": {"event": "session-end", "request_id": self.request_id, "user": self.user.name,
                                      "server": self.name or "", "outcome": self._end_reason or "stopped",
                                      "ran_s": round(ran, 1)}})
        self._end_reason = ""

    # -- lifetime
    def lifetime(self) -> Lifetime | None:
        hours = (self.session_options or {}).get("hours")
        if not self.lifetime_started or hours is None:
            return None
        return Lifetime(self.lifetime_started, float(hours))

    def lifetime_info(self) -> dict | None:
        life = self.lifetime()
        if life is None:
            return None
        now = self.ops.now()
        phase = life.phase(now, self.ops.lifetime_warning)
        return {"left_s": round(life.left(now)), "left": format_left(life.left(now)), "phase": phase.value,
                "ends": datetime.fromtimestamp(life.deadline, UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "hours": life.hours, "max_extension": self.ops.max_extension}

    async def extend_lifetime(self, extra_hours: float) -> Lifetime:
        """Add ``extra_hours`` within the person's quota; ValueError with the sentence they read."""
        life = self.lifetime()
        if life is None:
            raise ValueError("This session is not running, so it cannot be extended.")
        ctx = await self.spawn_context()
        live = [r for _, r in self.live_requests(others_only=False)]
        refusal = extension_refusal(ctx.quota, total(live), extra_hours, max_extension=self.ops.max_extension)
        pid = self.session_options.get("proposal")
        if refusal is None and pid in ctx.proposal_quotas:
            on_proposal = total(r for r in live if r.proposal == pid)
            refusal = extension_refusal(ctx.proposal_quotas[pid], on_proposal, extra_hours,
                                        max_extension=self.ops.max_extension)
        if refusal:
            raise ValueError(refusal)
        longer = life.extended(extra_hours)
        self.session_options = {**self.session_options, "hours": longer.hours}
        self.ops_store.extended(self.request_id, longer.hours)
        self.log.info("daas lifetime-extended request_id=%s user=%s server=%s by=%sh hours=%s",
                      self.request_id, self.user.name, self.name or "", extra_hours, longer.hours)
        return longer


class TimedSource:
    """A proposal source whose lookups are timed and counted (``daas_proposal_source_*``).

    Forwards everything else to the source; a stale answer (the catalogue did not
    answer and the cache's last one is used) counts as an error.
    """

    def __init__(self, source):
        self._source = source
        watch_source(source)

    def __getattr__(self, name):
        return getattr(self._source, name)

    async def _timed(self, operation: str, call):
        from daas_hub.sources import is_stale

        t0 = time.perf_counter()
        failed = True
        try:
            value = await call
            failed = operation == "proposals" and is_stale(value)
            return value
        finally:
            observe_source(operation, time.perf_counter() - t0, failed=failed)

    async def resolve_account(self, identity):
        return await self._timed("account", self._source.resolve_account(identity))

    async def proposals_for(self, account):
        return await self._timed("proposals", self._source.proposals_for(account))
