"""A cache around any proposal source: per-user answers with a TTL, a bounded
size, single-flight lookups and stale-if-error.

When the catalogue is down or slow, the last answer it gave for that person is
used (``ProposalList.stale`` says so, and the hub tells the person), never an
empty list that would lock people out. Nothing is written to disk: the cache
lives in the hub's memory and dies with it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic

from traitlets import Float, Instance, Int, Type, default

from ..errors import SourceUnavailable
from ..model import Account, Identity
from .base import ProposalList, ProposalSource
from .yaml_source import YamlProposalSource

_now = monotonic  # the clock TTLs are measured on


@dataclass
class _Entry:
    value: object
    at: float  # _now() when fetched
    wall: datetime  # when fetched, for people
    ttl: float


class CachedProposalSource(ProposalSource):
    """Wraps another source (``source_class``) with a per-user cache.

    Every call to the wrapped source is bounded by ``timeout``. Concurrent
    lookups for the same person share one call to the catalogue (single-flight):
    a burst of 100 logins makes one catalogue query per user.
    """

    source_class = Type(
        YamlProposalSource,
        klass=ProposalSource,
        config=True,
        help="""The source whose answers are cached.

        Example: ``c.CachedProposalSource.source_class = "daas_hub.sources.icat_source.IcatProposalSource"``
        """,
    )

    source = Instance(ProposalSource, help="The wrapped source (built from source_class).")

    @default("source")
    def _default_source(self):
        return self.source_class(parent=self)

    ttl = Float(
        300,
        config=True,
        help="""Seconds an answer from the catalogue is reused before asking again.

        A person added to a proposal sees it at their next login after at most this
        long. Example: ``300`` (5 minutes); ``0`` asks the catalogue every time
        (answers are still kept for stale-if-error).
        """,
    )

    negative_ttl = Float(
        60,
        config=True,
        help="""Seconds a "no account is linked to this identity" answer is reused.

        Kept short so that a newly linked identity can sign in soon after the
        user office links it. Example: ``60``.
        """,
    )

    stale_for = Float(
        7 * 24 * 3600,
        config=True,
        help="""Seconds a last known answer may still be used when the catalogue is down
        or slow (stale-if-error). Past this, the login fails with "catalogue
        unavailable" rather than use very old proposals.

        Example: ``604800`` (7 days).
        """,
    )

    max_entries = Int(
        50_000,
        config=True,
        help="""Most answers kept in memory (two per active person: account and
        proposals); the least recently used are dropped first.

        Example: ``50000``.
        """,
    )

    timeout = Float(
        20,
        config=True,
        help="""Seconds to wait for the wrapped source on each call. Past this the
        call counts as a catalogue failure (stale-if-error applies).

        Example: ``20``.
        """,
    )

    def __init__(self, source: ProposalSource | None = None, **kwargs):
        super().__init__(**kwargs)
        if source is not None:
            self.source = source
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._flights: dict[tuple, asyncio.Future] = {}
        self.stats = {"hits": 0, "misses": 0, "stale": 0, "errors": 0}

    def check(self) -> None:
        self.source.check()

    async def close(self) -> None:
        await self.source.close()

    def forget(self, username: str | None = None) -> None:
        """Drop cached answers (all, or those about ``username``)."""
        if username is None:
            self._entries.clear()
            return
        for key in [k for k, e in self._entries.items() if _about(k, e, username)]:
            del self._entries[key]

    async def resolve_account(self, identity: Identity) -> Account | None:
        value, _, _ = await self._get(
            ("account", identity), lambda: self.source.resolve_account(identity), "account lookup"
        )
        return value

    async def proposals_for(self, account: Account) -> ProposalList:
        value, stale, wall = await self._get(
            ("proposals", account.username), lambda: self.source.proposals_for(account), "proposal lookup"
        )
        return ProposalList(value, stale=stale, as_of=wall if stale else None)

    async def _get(self, key: tuple, fetch, what: str):
        entry = self._entries.get(key)
        if entry is not None and _now() - entry.at < entry.ttl:
            self._entries.move_to_end(key)
            self.stats["hits"] += 1
            return entry.value, False, entry.wall
        flight = self._flights.get(key)
        if flight is None:
            self.stats["misses"] += 1
            flight = asyncio.ensure_future(self._fetch(key, fetch, what))
            self._flights[key] = flight
            flight.add_done_callback(lambda f: self._flights.pop(key, None) if self._flights.get(key) is f else None)
        # shield: one caller giving up does not cancel the lookup the others wait for
        return await asyncio.shield(flight)

    async def _fetch(self, key: tuple, fetch, what: str):
        try:
            value = await asyncio.wait_for(fetch(), self.timeout)
        except (SourceUnavailable, TimeoutError) as e:
            reason = str(e) or f"no answer within {self.timeout:g} s"
            self.stats["errors"] += 1
            entry = self._entries.get(key)
            if entry is not None and _now() - entry.at < self.stale_for:
                self.stats["stale"] += 1
                self.log.warning(
                    "Catalogue %s failed (%s); using the answer from %s", what, reason,
                    entry.wall.isoformat(timespec="seconds"),
                )
                return entry.value, True, entry.wall
            raise SourceUnavailable(f"{what}: {reason}") from None
        if isinstance(value, list):
            value = list(value)
        ttl = self.negative_ttl if value is None else self.ttl
        self._entries[key] = _Entry(value, _now(), datetime.now(UTC), ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value, False, None


def _about(key: tuple, entry: _Entry, username: str) -> bool:
    if key[0] == "proposals":
        return key[1] == username
    account = entry.value
    return isinstance(account, Account) and account.username == username
