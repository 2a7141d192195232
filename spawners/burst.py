"""A class starting at once: the hub's start queue, session priority, own ports, own readiness.

- One :class:`~daas_hub.startqueue.StartQueue` per backend for the whole hub
  (:func:`queue_for`): the wrapper spawner takes a ticket before the child starts
  and gives it back once the session answers (or fails). Its place in the queue is
  shown on the progress page (:func:`waiting_events`).
- :class:`LocalBurst`, mixed into the local backend: sessions start at a lower
  CPU priority than the hub (``session_nice``, :func:`lower_priority`), each on a port no other session of
  this hub holds (:data:`PORTS`), and ``start`` returns only once the session's
  own server answers under its own URL prefix (JupyterHub's check accepts any
  answer on the port, even another session's 404).
"""

from __future__ import annotations

import asyncio
import os
import time

from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import HasTraits, Integer, default

from daas_hub.startqueue import PortBook, StartQueue, Ticket, waiting_message

from .common import refuse_logged

#: every queue of this hub, by backend name
_queues: dict[str, StartQueue] = {}
#: ports held by local sessions of this hub
PORTS = PortBook()


def queue_for(backend: str, slots: int) -> StartQueue:
    """The hub's start queue for ``backend``, with ``slots`` starts at once (0: no limit)."""
    queue = _queues.get(backend)
    if queue is None:
        queue = _queues[backend] = StartQueue(slots)
    queue.slots = slots
    return queue


async def waiting_events(queue: StartQueue, ticket: Ticket, *, interval: float = 1.0):
    """Progress events while ``ticket`` waits: its place, each time it changes."""
    last = None
    while ticket.waiting:
        position = queue.position(ticket)
        now = (position, queue.waiting, queue.starting)
        if position and now != last:
            last = now
            yield {"progress": 5, "message": waiting_message(position, queue.waiting, queue.starting)}
        await asyncio.wait([ticket.admitted], timeout=interval)


#: where Linux keeps the CPU priority of a process's autogroup (sched(7), "The autogroup feature")
AUTOGROUP = "/proc/self/autogroup"


def lower_priority(increment: int, *, autogroup: str = AUTOGROUP) -> None:
    """Lower this process's CPU priority by ``increment`` (for a session, before its exec).

    ``os.nice`` alone does not do it on most Linux machines: a session runs in a
    new session (``setsid``), which puts it in a new *autogroup*, and with
    autogroups (``/proc/sys/kernel/sched_autogroup_enabled``) a nice value only
    ranks processes within their group, while each group gets an equal share of
    the CPU against the hub's. So the autogroup's own nice value is set too
    (measured: two busy processes at nice 10 in new sessions took as much CPU as
    two at nice 0; with the autogroup's nice set, a ninth as much). A kernel
    without autogroups has no such file: ``os.nice`` is then all it takes.
    """
    if increment <= 0:
        return
    os.nice(increment)
    try:
        with open(autogroup, "w") as f:
            f.write(str(increment))
    except OSError:
        pass  # no autogroups on this kernel (or not allowed): the process's nice value applies


class SessionExited(Exception):
    """The session's process ended before its server answered."""


async def wait_for_own_server(url: str, *, alive, timeout: float, interval: float = 0.25) -> float:
    """Wait until ``url`` (the session's ``<prefix>api``) answers 200; the seconds it took.

    Only the session's own server serves its prefix: another session listening on
    the same port answers 404 there, and is not taken for it. Raises
    :class:`SessionExited` when ``alive()`` turns false, ``TimeoutError`` after ``timeout``.
    """
    client = AsyncHTTPClient()
    started = time.monotonic()
    while True:
        if not alive():
            raise SessionExited(url)
        try:
            r = await client.fetch(url, request_timeout=5, follow_redirects=False, raise_error=False)
            if r.code == 200:
                return time.monotonic() - started
        except (OSError, HTTPClientError):
            pass  # not listening yet
        if time.monotonic() - started > timeout:
            raise TimeoutError(url)
        await asyncio.sleep(interval)


class LocalBurst(HasTraits):
    """Start-up behaviour of local sessions for many starts at once (see the module)."""

    session_nice = Integer(
        10,
        config=True,
        help="""CPU priority of local sessions, as a ``nice`` increment (0-19): the hub keeps
        answering while sessions start and run. 0 runs sessions at the hub's priority.

        Example: ``10`` (the default). docs/local-backend.md ("A class starting at once").

        .. versionadded:: 0.2
        """,
    )

    min_home_free = Integer(
        10 * 2**20,
        config=True,
        help="""Bytes that must be free in a session's home for it to start (JupyterLab writes
        its runtime files there). With less, the person reads that their home folder is full,
        and nothing is started. 0: no check.

        Example: ``10 * 2**20`` (10 MiB, the default)

        .. versionadded:: 0.2
        """,
    )

    @default("start_slots")
    def _default_start_slots(self):
        return os.cpu_count() or 1  # a start is CPU-bound: one per core

    @default("http_timeout")
    def _default_http_timeout(self):
        return 120  # a start on a busy machine; the queue wait does not count

    def _check_home_space(self) -> None:
        if not self.min_home_free or not self._home:
            return
        try:
            st = os.statvfs(self._home)
        except OSError:
            return  # the home checks of SessionSetup report a missing home
        free = st.f_bavail * st.f_frsize
        if free < self.min_home_free:
            raise refuse_logged(
                self.log, f"Your home folder is full ({free // 1024} KiB free), so your session cannot start "
                f"there; nothing was started. Delete or move files you no longer need (another session, "
                f"or the facility's file service, can reach them), or contact {self.contact}.",
                reason="home-full", status_code=400,
                detail=f"{self._home} has {free} bytes free, below c.LocalSpawner.min_home_free={self.min_home_free}",
            )

    async def start(self):
        self._check_home_space()
        ip = self.ip or "127.0.0.1"
        self.port = PORTS.take(ip)
        try:
            result = await super().start()
            took = await wait_for_own_server(
                f"http://{ip}:{self.port}{self.server.base_url}api",
                alive=lambda: self.proc is not None and self.proc.poll() is None, timeout=self.http_timeout,
            )
        except SessionExited:
            PORTS.give_back(self.port)
            raise refuse_logged(
                self.log, f"Your session stopped while it was starting, so it is not running. Try again; if "
                f"it happens again, contact {self.contact}.", reason="session-exited",
                detail=f"{self._log_name} exited with status {self.proc.returncode} before answering "
                       f"(its output is above in the hub's log)",
            ) from None
        except TimeoutError:
            await self.stop(now=True)
            raise refuse_logged(
                self.log, f"Your session did not answer within {self.http_timeout} s of starting, so it was "
                f"stopped. Try again; if it happens again, contact {self.contact}.", reason="session-timeout",
                detail=f"{self._log_name} did not answer on port {self.port} within {self.http_timeout} s "
                       f"(c.LocalSpawner.http_timeout)",
            ) from None
        except BaseException:
            PORTS.give_back(self.port)
            raise
        self.log.info("%s answers on port %d after %.1f s", self._log_name, self.port, took)
        return result

    async def poll(self):
        status = await super().poll()
        if status is None and self.server is not None:
            PORTS.hold(self.server.port)  # found again after a hub restart
        elif status is not None and self.server is not None:
            PORTS.give_back(self.server.port)
        return status

    async def stop(self, now=False):
        port = self.server.port if self.server is not None else self.port
        await super().stop(now=now)
        PORTS.give_back(port)

    def nice_increment(self) -> int:
        """The ``os.nice`` increment for a session's process (``preexec_fn``)."""
        return max(0, min(19, self.session_nice))
