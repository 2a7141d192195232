"""Combine sources: accounts from one catalogue, proposals from others.

For example the user office database links UmbrellaID subjects to facility
accounts, ICAT lists the proposals, and a YAML file adds training courses.
"""

from __future__ import annotations

import asyncio

from traitlets import Instance, List, Type, default

from ..errors import SettingsError
from ..model import Account, Identity
from .base import ProposalList, ProposalSource
from .yaml_source import YamlProposalSource


class ChainedProposalSource(ProposalSource):
    """Accounts from ``account_source_class``; proposals from each of
    ``proposal_source_classes``, merged (a proposal id listed twice keeps the first).

    Each source is configured through its own class name, e.g.
    ``c.SqlProposalSource.url`` and ``c.IcatProposalSource.url``, so one class
    appears at most once in a chain.
    """

    account_source_class = Type(
        YamlProposalSource,
        klass=ProposalSource,
        config=True,
        help="""The source that links identities to facility accounts.

        Example: ``"daas_hub.sources.sql_source.SqlProposalSource"``
        """,
    )

    proposal_source_classes = List(
        Type(klass=ProposalSource),
        config=True,
        help="""The sources whose proposals are listed, in order. Empty: the account
        source's own proposals.

        Example: ``["daas_hub.sources.icat_source.IcatProposalSource"]``
        """,
    )

    account_source = Instance(ProposalSource)
    proposal_sources = List(Instance(ProposalSource))

    @default("account_source")
    def _default_account_source(self):
        return self.account_source_class(parent=self)

    @default("proposal_sources")
    def _default_proposal_sources(self):
        sources = []
        for cls in self.proposal_source_classes:
            if cls is self.account_source_class:
                sources.append(self.account_source)
            else:
                sources.append(cls(parent=self))
        return sources or [self.account_source]

    def check(self) -> None:
        classes = [type(s) for s in self.proposal_sources]
        if len(set(classes)) != len(classes):
            raise SettingsError(
                "site settings", "proposal_source > proposals",
                "the same kind of source is listed twice, and both would read the same settings",
                "list each kind once",
            )
        seen = set()
        for source in [self.account_source, *self.proposal_sources]:
            if id(source) not in seen:
                seen.add(id(source))
                source.check()

    async def close(self) -> None:
        seen = set()
        for source in [self.account_source, *self.proposal_sources]:
            if id(source) not in seen:
                seen.add(id(source))
                await source.close()

    async def resolve_account(self, identity: Identity) -> Account | None:
        return await self.account_source.resolve_account(identity)

    async def proposals_for(self, account: Account) -> ProposalList:
        answers = await asyncio.gather(*(s.proposals_for(account) for s in self.proposal_sources))
        merged: dict[str, object] = {}
        for answer in answers:
            for proposal in answer:
                merged.setdefault(proposal.id, proposal)
        return ProposalList(merged.values(), stale=any(getattr(a, "stale", False) for a in answers))
