"""The interface every proposal source implements, and helpers they share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from traitlets.config import LoggingConfigurable

from ..errors import SettingsError, SourceUnavailable
from ..model import Account, Identity, Proposal

T = TypeVar("T")


class ProposalList(list):
    """What :meth:`ProposalSource.proposals_for` returns: a list of proposals that
    also says whether it is the catalogue's current answer.

    ``stale`` is True when the catalogue did not answer and these are the last
    proposals it gave (see :class:`~daas_hub.sources.cache.CachedProposalSource`);
    ``as_of`` is when the catalogue gave them (UTC), or None if just now.
    """

    stale: bool = False
    as_of: datetime | None = None

    def __init__(self, proposals: Iterable[Proposal] = (), *, stale: bool = False,
                 as_of: datetime | None = None):
        super().__init__(proposals)
        self.stale = stale
        self.as_of = as_of


class ProposalSource(LoggingConfigurable):
    """Resolves who signed in to a facility account, and lists its proposals.

    Implementations read the catalogue where it lives (a YAML file, ICAT, SciCat,
    the user office database) and keep no copy of it at rest. Methods are
    coroutines because most catalogues are remote; they raise
    :class:`~daas_hub.errors.SourceUnavailable` when the catalogue does not answer,
    never return an empty list in its place.
    """

    def check(self) -> None:
        """Validate the configuration at hub start-up (no network I/O).

        Raise :class:`~daas_hub.errors.SettingsError` naming what to fix. The
        default checks nothing.
        """

    async def resolve_account(self, identity: Identity) -> Account | None:
        """The facility account linked to ``identity``, or None if there is none."""
        raise NotImplementedError

    async def proposals_for(self, account: Account) -> list[Proposal]:
        """Every proposal ``account`` is a member of, in any state."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections and sessions (the CLI and tests call it)."""


def is_stale(proposals) -> bool:
    """True if ``proposals`` came from a cache because the catalogue did not answer."""
    return bool(getattr(proposals, "stale", False))


def read_secret(value: str, file: str, *, setting: str) -> str:
    """A password given directly, or read from a file (first line, stripped)."""
    if value:
        return value
    if not file:
        return ""
    try:
        return Path(file).read_text().splitlines()[0].strip() if Path(file).stat().st_size else ""
    except OSError as e:
        raise SettingsError(
            file, setting, f"cannot read the password file ({e.strerror})",
            "create the file (mode 0600, readable by the hub's account) or correct the path",
        ) from None


async def bounded(awaitable, timeout: float, what: str):
    """Await ``awaitable`` for at most ``timeout`` seconds; a time-out is SourceUnavailable."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise SourceUnavailable(f"{what} did not answer within {timeout:g} s") from None


async def in_thread(executor: Executor, fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run the blocking ``fn`` in ``executor``, waiting at most ``timeout`` seconds.

    On a time-out the thread finishes on its own; its result is dropped.
    """
    loop = asyncio.get_running_loop()
    return await bounded(loop.run_in_executor(executor, fn), timeout, what)
