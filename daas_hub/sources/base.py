"""The interface every proposal source implements."""

from __future__ import annotations

from traitlets.config import LoggingConfigurable

from ..model import Account, Identity, Proposal


class ProposalSource(LoggingConfigurable):
    """Resolves who signed in to a facility account, and lists its proposals.

    Implementations read the catalogue where it lives (a YAML file, ICAT, SciCat,
    the user office database) and keep no copy of it at rest. Methods are
    coroutines because most catalogues are remote; they raise
    :class:`~daas_hub.errors.SourceUnavailable` when the catalogue does not answer,
    never return an empty list in its place.
    """

    def check(self) -> None:
        """Validate the configuration at hub start-up.

        Raise :class:`~daas_hub.errors.SettingsError` naming what to fix. The
        default checks nothing.
        """

    async def resolve_account(self, identity: Identity) -> Account | None:
        """The facility account linked to ``identity``, or None if there is none."""
        raise NotImplementedError

    async def proposals_for(self, account: Account) -> list[Proposal]:
        """Every proposal ``account`` is a member of, in any state."""
        raise NotImplementedError
