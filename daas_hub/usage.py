"""The operations store: one row per session (usage accounting, status) and the announcements.

A SQLite file beside the hub's database (``<data_dir>/daas-operations.sqlite``),
written by the hub as sessions are requested, start, are polled and end, so a
hub restart loses nothing: a session that was running when the hub stopped
counts up to its last poll. Read by ``daas-hub usage``, ``daas-hub status``
and the admin pages. No JupyterHub imports; every time is passed in (epoch s).
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FILE_NAME = "daas-operations.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,          -- the spawn's request id (also in the hub's log line)
    user TEXT NOT NULL,
    server TEXT NOT NULL,
    proposal TEXT NOT NULL,       -- '' without a proposal
    profile TEXT NOT NULL,
    backend TEXT NOT NULL,
    course TEXT NOT NULL,         -- the person's JupyterHub group (courses are groups), '' if none
    cpu REAL NOT NULL,
    memory INTEGER NOT NULL,      -- bytes
    gpu INTEGER NOT NULL,
    hours REAL NOT NULL,          -- requested lifetime, extensions included
    state TEXT NOT NULL,          -- pending, running, ended, failed
    detail TEXT NOT NULL DEFAULT '',  -- why pending / why it ended or failed
    requested REAL NOT NULL,
    started REAL,
    last_seen REAL,
    ended REAL
);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions(state);
CREATE TABLE IF NOT EXISTS announcements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    level TEXT NOT NULL DEFAULT 'info',
    created REAL NOT NULL,
    ends REAL                     -- NULL: until removed
);
"""

LEVELS = ("info", "warning", "danger")
MAX_ANNOUNCEMENT = 1000


def store_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / FILE_NAME


@dataclass(frozen=True)
class SessionRecord:
    id: str
    user: str
    server: str
    proposal: str
    profile: str
    backend: str
    course: str
    cpu: float
    memory: int
    gpu: int
    hours: float
    state: str
    detail: str
    requested: float
    started: float | None
    last_seen: float | None
    ended: float | None

    def interval(self) -> tuple[float, float] | None:
        """When it ran: from start to its end, else to its last poll (a running one)."""
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else (self.last_seen or self.started)
        return self.started, max(self.started, end)


@dataclass(frozen=True)
class Announcement:
    id: int
    text: str
    level: str
    created: float
    ends: float | None

    def active(self, now: float) -> bool:
        return self.ends is None or self.ends > now


class OperationsStore:
    """The store; every method is one short transaction (safe from the hub's thread)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        """One connection, kept open: closing the last one would checkpoint and sync the disk each time."""
        if self._con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # mode 0600 before SQLite opens it: its -wal and -shm files take the database's mode
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            con = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            # WAL, synced at checkpoints: a write does not wait for the disk each time (a power cut may
            # lose the last seconds of polls, never the store); the hub writes on every poll
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_SCHEMA)
            self._con = con
        return self._con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def _write(self, sql: str, args=()) -> int:
        with self._lock:
            con = self._connect()
            with con:
                cur = con.execute(sql, args)
                return cur.lastrowid or cur.rowcount

    def _read(self, sql: str, args=()) -> list[tuple]:
        if self._con is None and not self.path.exists():
            return []
        with self._lock:
            return self._connect().execute(sql, args).fetchall()

    # -- sessions
    def requested(self, rid: str, *, user: str, server: str, proposal: str | None, profile: str, backend: str,
                  course: str, cpu: float, memory: int, gpu: int, hours: float, now: float) -> None:
        self._write(
            "INSERT OR REPLACE INTO sessions (id, user, server, proposal, profile, backend, course, cpu, memory,"
            " gpu, hours, state, detail, requested) VALUES (?,?,?,?,?,?,?,?,?,?,?,'pending','',?)",
            (rid, user, server, proposal or "", profile, backend, course, cpu, memory, gpu, hours, now))

    def pending_detail(self, rid: str, detail: str) -> None:
        self._write("UPDATE sessions SET detail=? WHERE id=? AND state='pending'", (detail[:300], rid))

    def started(self, rid: str, now: float) -> None:
        self._write("UPDATE sessions SET state='running', detail='', started=?, last_seen=? WHERE id=?",
                    (now, now, rid))

    def seen(self, rid: str, now: float) -> None:
        self._write("UPDATE sessions SET last_seen=? WHERE id=? AND state='running'", (now, rid))

    def extended(self, rid: str, hours: float) -> None:
        self._write("UPDATE sessions SET hours=? WHERE id=?", (hours, rid))

    def ended(self, rid: str, now: float, *, failed: bool = False, detail: str = "") -> None:
        """The session ended (or never started: ``failed``); a second call changes nothing."""
        self._write(
            "UPDATE sessions SET state=?, detail=?, ended=CASE WHEN started IS NULL THEN NULL ELSE ? END,"
            " last_seen=CASE WHEN started IS NULL THEN NULL ELSE ? END WHERE id=? AND state IN ('pending','running')",
            ("failed" if failed else "ended", detail[:300], now, now, rid))

    def record(self, rid: str) -> SessionRecord | None:
        rows = self._read("SELECT * FROM sessions WHERE id=?", (rid,))
        return SessionRecord(*rows[0]) if rows else None

    def sessions(self, *, open_only: bool = False, since: float | None = None,
                 until: float | None = None) -> list[SessionRecord]:
        """Sessions, oldest first; ``open_only``: pending and running; ``since``/``until``:
        those that ran (or were requested) in that period."""
        sql, args = "SELECT * FROM sessions WHERE 1=1", []
        if open_only:
            sql += " AND state IN ('pending','running')"
        if since is not None:
            sql += " AND COALESCE(ended, last_seen, requested) >= ?"
            args.append(since)
        if until is not None:
            sql += " AND requested < ?"
            args.append(until)
        return [SessionRecord(*r) for r in self._read(sql + " ORDER BY requested", args)]

    # -- announcements
    def announce(self, text: str, *, level: str = "info", ends: float | None, now: float) -> int:
        text = text.strip()
        if not text:
            raise ValueError("The announcement is empty; write the text people should read.")
        if len(text) > MAX_ANNOUNCEMENT:
            raise ValueError(f"The announcement has {len(text)} characters; keep it under {MAX_ANNOUNCEMENT}.")
        if level not in LEVELS:
            raise ValueError(f"Unknown level {level!r}; choose one of {', '.join(LEVELS)}.")
        if ends is not None and ends <= now:
            raise ValueError("The end time is in the past; choose a later one, or none.")
        return self._write("INSERT INTO announcements (text, level, created, ends) VALUES (?,?,?,?)",
                           (text, level, now, ends))

    def withdraw(self, aid: int) -> None:
        self._write("DELETE FROM announcements WHERE id=?", (aid,))

    def announcements(self, now: float | None = None) -> list[Announcement]:
        """All announcements, newest first; with ``now``: only those still shown."""
        rows = [Announcement(*r) for r in
                self._read("SELECT id, text, level, created, ends FROM announcements ORDER BY id DESC")]
        return [a for a in rows if now is None or a.active(now)]


# -- usage reports
@dataclass(frozen=True)
class UsageRow:
    key: str  # the proposal, user or course
    sessions: int
    session_hours: float
    cpu_hours: float
    gpu_hours: float


BY = ("proposal", "user", "course")


def _overlap(interval: tuple[float, float] | None, start: float, end: float) -> float:
    if interval is None:
        return 0.0
    return max(0.0, min(interval[1], end) - max(interval[0], start))


def usage_report(records, start: float, end: float, by: str) -> list[UsageRow]:
    """Session-, CPU- and GPU-hours per ``by`` (proposal, user or course) in [start, end).

    A session counts for the part of its run inside the period. Sorted by key.
    """
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}")
    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for r in records:
        seconds = _overlap(r.interval(), start, end)
        if seconds <= 0:
            continue
        row = sums[getattr(r, by) or "(none)"]
        row[0] += 1
        row[1] += seconds / 3600
        row[2] += r.cpu * seconds / 3600
        row[3] += r.gpu * seconds / 3600
    return [UsageRow(k, int(v[0]), v[1], v[2], v[3]) for k, v in sorted(sums.items())]


def usage_series(records, start: float, end: float, buckets: int = 24) -> tuple[list[float], dict[str, list[float]]]:
    """CPU-hours per proposal in ``buckets`` equal steps of [start, end): (bucket starts, {proposal: values})."""
    step = (end - start) / buckets
    edges = [start + i * step for i in range(buckets)]
    series: dict[str, list[float]] = {}
    for r in records:
        interval = r.interval()
        if interval is None:
            continue
        values = series.setdefault(r.proposal or "(none)", [0.0] * buckets)
        for i, b in enumerate(edges):
            values[i] += r.cpu * _overlap(interval, b, b + step) / 3600
    return edges, {k: v for k, v in sorted(series.items()) if any(v)}


def format_report(rows: list[UsageRow], by: str, *, as_csv: bool) -> str:
    header = [by, "sessions", "session_hours", "cpu_hours", "gpu_hours"]
    if as_csv:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow([r.key, r.sessions, f"{r.session_hours:.4f}", f"{r.cpu_hours:.4f}", f"{r.gpu_hours:.4f}"])
        return out.getvalue()
    width = max([len(by), *(len(r.key) for r in rows)])
    lines = [f"{by:<{width}}  sessions  session-h     CPU-h     GPU-h"]
    for r in rows:
        lines.append(f"{r.key:<{width}}  {r.sessions:8d}  {r.session_hours:9.2f}  {r.cpu_hours:8.2f}  {r.gpu_hours:8.2f}")
    if not rows:
        lines.append("(no sessions ran in this period)")
    return "\n".join(lines) + "\n"


# -- status
@dataclass(frozen=True)
class Status:
    running: dict  # (backend, proposal, profile) -> count
    pending: list  # SessionRecord, oldest first
    per_user: dict  # user -> {"sessions", "cpu", "memory", "gpu", "hours"}


def status(records) -> Status:
    """What runs now (open records): sessions per backend/proposal/profile, pending ones, use per user."""
    running: dict = defaultdict(int)
    pending, per_user = [], {}
    for r in records:
        if r.state == "pending":
            pending.append(r)
        elif r.state == "running":
            running[(r.backend, r.proposal or "(none)", r.profile)] += 1
        else:
            continue
        u = per_user.setdefault(r.user, {"sessions": 0, "cpu": 0.0, "memory": 0, "gpu": 0, "hours": 0.0})
        u["sessions"] += 1
        u["cpu"] += r.cpu
        u["memory"] += r.memory
        u["gpu"] += r.gpu
        u["hours"] += r.hours
    return Status(dict(sorted(running.items())), pending, dict(sorted(per_user.items())))


def format_status(st: Status, now: float) -> str:
    gib = 1024**3
    lines = ["running sessions (backend / proposal / profile):"]
    lines += [f"  {b:<8} {p:<14} {pr:<18} {n}" for (b, p, pr), n in st.running.items()] or ["  none"]
    lines.append("pending spawns:")
    lines += [f"  {r.user:<12} {r.backend:<8} {r.proposal or '(none)':<14} {r.profile:<18} "
              f"waiting {int(now - r.requested)} s: {r.detail or 'starting'}" for r in st.pending] or ["  none"]
    lines.append("quota use (live sessions):")
    lines += [f"  {u:<12} {v['sessions']} session(s), {v['cpu']:g} CPU, {v['memory'] / gib:g} GiB, "
              f"{v['gpu']} GPU, {v['hours']:g} h" for u, v in st.per_user.items()] or ["  none"]
    return "\n".join(lines) + "\n"


def parse_time(text: str, *, what: str) -> float:
    """``2025-03-01`` or ``2025-03-01T12:00`` (UTC unless an offset is given) -> epoch seconds."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a date such as 2025-03-01 or 2025-03-01T12:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
