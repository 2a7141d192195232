"""The cache around proposal sources: TTL, stale-if-error, bounded size,
single-flight under concurrent logins, and chaining sources.

The wrapped source here is a small in-process ProposalSource that counts calls
and can be told to fail or hang: the cache is the unit under test, and these
behaviours do not depend on which catalogue is behind it.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from daas_hub.errors import SourceUnavailable
from daas_hub.model import Account, Identity, Member, MemberRole, Proposal
from daas_hub.sources import (
    CachedProposalSource,
    ChainedProposalSource,
    ProposalList,
    ProposalSource,
    is_stale,
)


class StandInSource(ProposalSource):
    """Counts calls; ``failing`` raises SourceUnavailable, ``hang`` never answers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls: dict[str, int] = {}
        self.failing = False
        self.hang = False
        self.delay = 0.0
        self.proposals = {"alice": ["MX-1"], "bob": ["MX-2", "MX-3"]}

    async def _answer(self, what: str):
        self.calls[what] = self.calls.get(what, 0) + 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.hang:
            await asyncio.sleep(3600)
        if self.failing:
            raise SourceUnavailable("catalogue down")

    async def resolve_account(self, identity):
        await self._answer(f"account:{identity.username}")
        if identity.username not in self.proposals and not identity.username.startswith("user"):
            return None
        return Account(identity.username, roles=frozenset({"user"}))

    async def proposals_for(self, account):
        await self._answer(f"proposals:{account.username}")
        ids = self.proposals.get(account.username, [f"P-{account.username}"])
        return ProposalList(Proposal(i, "t", "ID01", "F", members=(Member(account.username, MemberRole.PI),))
                            for i in ids)


def ident(name: str) -> Identity:
    return Identity(provider="facility", subject=name, username=name)


@pytest.fixture
def clock(monkeypatch):
    """Controls time.monotonic() as the cache sees it."""
    now = [1000.0]
    monkeypatch.setattr("daas_hub.sources.cache._now", lambda: now[0])
    return now


async def test_answers_are_reused_until_the_ttl(clock):
    inner = StandInSource()
    cache = CachedProposalSource(source=inner, ttl=300)
    alice = await cache.resolve_account(ident("alice"))
    first = await cache.proposals_for(alice)
    clock[0] += 299
    again = await cache.proposals_for(alice)
    assert [p.id for p in first] == [p.id for p in again] == ["MX-1"]
    assert inner.calls == {"account:alice": 1, "proposals:alice": 1}
    assert not is_stale(again)
    clock[0] += 2
    inner.proposals["alice"] = ["MX-1", "MX-9"]
    assert [p.id for p in await cache.proposals_for(alice)] == ["MX-1", "MX-9"]
    assert inner.calls["proposals:alice"] == 2


async def test_no_account_is_remembered_only_briefly(clock):
    inner = StandInSource()
    cache = CachedProposalSource(source=inner, ttl=300, negative_ttl=60)
    assert await cache.resolve_account(ident("nobody")) is None
    clock[0] += 30
    assert await cache.resolve_account(ident("nobody")) is None
    assert inner.calls["account:nobody"] == 1
    clock[0] += 31
    inner.proposals["nobody"] = ["X-1"]  # the user office linked the identity
    assert (await cache.resolve_account(ident("nobody"))).username == "nobody"


@pytest.mark.parametrize("failure", ["raises", "times out"])
async def test_stale_if_error_gives_the_last_known_proposals_marked_stale(clock, caplog, failure):
    inner = StandInSource()
    cache = CachedProposalSource(source=inner, ttl=300, timeout=0.2)
    alice = await cache.resolve_account(ident("alice"))
    await cache.proposals_for(alice)
    clock[0] += 301
    inner.failing = failure == "raises"
    inner.hang = failure == "times out"
    with caplog.at_level(logging.WARNING):
        stale = await cache.proposals_for(alice)
        account = await cache.resolve_account(ident("alice"))
    assert [p.id for p in stale] == ["MX-1"]
    assert is_stale(stale) and stale.stale and stale.as_of is not None
    assert account == alice
    assert "using the answer from" in caplog.text
    assert cache.stats["stale"] == 2


async def test_without_a_last_answer_an_outage_is_an_error_not_an_empty_list(clock):
    inner = StandInSource()
    inner.failing = True
    cache = CachedProposalSource(source=inner)
    with pytest.raises(SourceUnavailable, match="catalogue down"):
        await cache.proposals_for(Account("alice"))
    inner.failing, inner.hang = False, True
    cache.timeout = 0.1
    with pytest.raises(SourceUnavailable, match="no answer within 0.1 s"):
        await cache.resolve_account(ident("alice"))


async def test_stale_answers_expire_after_stale_for(clock):
    inner = StandInSource()
    cache = CachedProposalSource(source=inner, ttl=60, stale_for=3600)
    await cache.proposals_for(Account("alice"))
    inner.failing = True
    clock[0] += 3599
    assert is_stale(await cache.proposals_for(Account("alice")))
    clock[0] += 2
    with pytest.raises(SourceUnavailable):
        await cache.proposals_for(Account("alice"))


async def test_the_cache_is_bounded_least_recently_used_first(clock):
    inner = StandInSource()
    cache = CachedProposalSource(source=inner, max_entries=3)
    for name in ("user1", "user2", "user3"):
        await cache.proposals_for(Account(name))
    await cache.proposals_for(Account("user1"))  # user1 is now the most recent
    await cache.proposals_for(Account("user4"))  # evicts user2
    assert len(cache._entries) == 3
    await cache.proposals_for(Account("user1"))
    await cache.proposals_for(Account("user3"))
    assert inner.calls["proposals:user1"] == 1 and inner.calls["proposals:user3"] == 1
    await cache.proposals_for(Account("user2"))
    assert inner.calls["proposals:user2"] == 2


async def test_100_simultaneous_logins_make_one_catalogue_query_per_user():
    inner = StandInSource()
    inner.delay = 0.2
    cache = CachedProposalSource(source=inner)
    users = [f"user{i % 10}" for i in range(100)]  # 100 logins by 10 people

    async def login(name):
        account = await cache.resolve_account(ident(name))
        return await cache.proposals_for(account)

    answers = await asyncio.gather(*(login(n) for n in users))
    assert all(a[0].id == f"P-{n}" for a, n in zip(answers, users, strict=True))
    assert {k: v for k, v in inner.calls.items()} == {
        **{f"account:user{i}": 1 for i in range(10)}, **{f"proposals:user{i}": 1 for i in range(10)}}


async def test_one_caller_giving_up_does_not_cancel_the_shared_lookup():
    inner = StandInSource()
    inner.delay = 0.3
    cache = CachedProposalSource(source=inner)
    impatient = asyncio.ensure_future(cache.proposals_for(Account("alice")))
    patient = asyncio.ensure_future(cache.proposals_for(Account("alice")))
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert [p.id for p in await patient] == ["MX-1"]
    assert inner.calls["proposals:alice"] == 1


async def test_forget_drops_one_persons_answers(clock):
    inner = StandInSource()
    cache = CachedProposalSource(source=inner)
    alice = await cache.resolve_account(ident("alice"))
    await cache.proposals_for(alice)
    await cache.proposals_for(Account("bob"))
    cache.forget("alice")
    await cache.proposals_for(alice)
    await cache.proposals_for(Account("bob"))
    assert inner.calls["proposals:alice"] == 2 and inner.calls["proposals:bob"] == 1


class Training(ProposalSource):
    async def proposals_for(self, account):
        return [Proposal("TRAIN-1", "course", "-", "F", members=(Member(account.username),)),
                Proposal("MX-1", "duplicate", "-", "F", members=(Member(account.username),))]


async def test_chain_takes_accounts_from_one_source_and_merges_proposals_from_others():
    chain = ChainedProposalSource(account_source_class=StandInSource, proposal_source_classes=[StandInSource, Training])
    assert chain.proposal_sources[0] is chain.account_source
    alice = await chain.resolve_account(ident("alice"))
    proposals = await chain.proposals_for(alice)
    assert [p.id for p in proposals] == ["MX-1", "TRAIN-1"]
    assert proposals[0].title == "t"  # the first source wins a duplicate id
    assert not is_stale(proposals)


async def test_chain_fails_as_a_whole_so_the_cache_can_serve_the_last_answer(clock):
    chain = ChainedProposalSource(account_source_class=StandInSource, proposal_source_classes=[StandInSource, Training])
    cache = CachedProposalSource(source=chain, ttl=1)
    alice = await cache.resolve_account(ident("alice"))
    assert len(await cache.proposals_for(alice)) == 2
    chain.account_source.failing = True
    clock[0] += 2
    stale = await cache.proposals_for(alice)
    assert is_stale(stale) and [p.id for p in stale] == ["MX-1", "TRAIN-1"]
