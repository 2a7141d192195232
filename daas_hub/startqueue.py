"""Admission of session starts, and ports that cannot collide: for a class starting at once.

:class:`StartQueue` lets at most ``slots`` sessions start at the same time on one
backend, first come first served; the others wait their turn and know their
place. Waiting is never a failure: a ticket waits as long as it takes.

:class:`PortBook` hands out local ports no other session of this hub holds and
nothing on the machine listens on, so two sessions never get the same port
(JupyterHub's ``random_port`` asks the kernel for a free port and lets it go,
so two starts close together may be given the same one).

Plain asyncio and sockets, no JupyterHub: the spawners use them
(:mod:`daas_hub.spawners.burst`).
"""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass, field


@dataclass(eq=False)
class Ticket:
    """One start's place in a :class:`StartQueue`."""

    who: str
    admitted: asyncio.Future = field(repr=False)
    left: bool = False

    @property
    def waiting(self) -> bool:
        return not self.admitted.done()


class StartQueue:
    """First come, first served: at most ``slots`` starts at once (0: no limit)."""

    def __init__(self, slots: int):
        self.slots = slots
        self.starting = 0
        self._waiting: list[Ticket] = []

    def join(self, who: str) -> Ticket:
        """A ticket for ``who``; admitted at once if a slot is free."""
        ticket = Ticket(who, asyncio.get_running_loop().create_future())
        self._waiting.append(ticket)
        self._admit()
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """The start is over (ready, failed or cancelled): its slot, or its place, goes to the next."""
        if ticket.left:  # leaving twice frees one slot only
            return
        ticket.left = True
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            ticket.admitted.cancel()
        elif ticket.admitted.done() and not ticket.admitted.cancelled():
            self.starting -= 1
        self._admit()

    def position(self, ticket: Ticket) -> int:
        """1 for the next to start, 2 after it...; 0 once admitted (or gone)."""
        try:
            return self._waiting.index(ticket) + 1
        except ValueError:
            return 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _admit(self) -> None:
        while self._waiting and (self.slots <= 0 or self.starting < self.slots):
            ticket = self._waiting.pop(0)
            self.starting += 1
            ticket.admitted.set_result(None)


def waiting_message(position: int, waiting: int, starting: int) -> str:
    """What a person waiting in the start queue reads on the progress page."""
    ahead = position - 1
    if ahead == 0:
        where = "Your session starts next"
    else:
        where = f"Your session is number {position} in the queue ({ahead} before it)"
    return (f"{where}: {starting} sessions are starting on this machine now, {waiting} waiting. "
            f"It starts by itself when its turn comes; this page follows it.")


def session_port_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """Ports for sessions: 20000 up to the kernel's ephemeral range (outgoing connections, and
    JupyterHub's ``random_port``, take ports there; a session binding one of them fails with
    "port is not available", as measured in a 100-session burst)."""
    try:
        with open(path) as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return (20000, ephemeral_low - 1) if ephemeral_low > 21000 else (10000, 19999)


class PortBook:
    """Local ports handed to sessions of this hub, so that no two get the same one.

    ``free`` is how a port is checked for nobody listening (injectable for tests).
    Default range: :func:`session_port_range`, below the kernel's ephemeral ports.
    """

    def __init__(self, low: int | None = None, high: int | None = None, *, free=None,
                 rng: random.Random | None = None):
        default_low, default_high = session_port_range()
        self.low, self.high = low or default_low, high or default_high
        self.held: set[int] = set()
        self._free = free or port_is_free
        self._rng = rng or random.Random()

    def take(self, ip: str = "127.0.0.1") -> int:
        """A port in [low, high] held by no session of this hub and free on ``ip``."""
        for _ in range(200):
            port = self._rng.randint(self.low, self.high)
            if port not in self.held and self._free(ip, port):
                self.held.add(port)
                return port
        raise RuntimeError(f"no free port found between {self.low} and {self.high} after 200 tries")

    def hold(self, port: int) -> None:
        """A port a running session already has (found again after a hub restart)."""
        if port:
            self.held.add(port)

    def give_back(self, port: int) -> None:
        self.held.discard(port)


def port_is_free(ip: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip or "127.0.0.1", port))
        except OSError:
            return False
    return True
