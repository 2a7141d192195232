"""Opt-in contract test: the ICAT source against a real ICAT server.

Not run unless ICAT_TEST_URL is set (pytest reports it as skipped, "not run").
A facility runs it against its own ICAT (docs/sources/icat.md):

    ICAT_TEST_URL=https://icat.example.org \\
    ICAT_TEST_AUTH=db ICAT_TEST_READER=reader ICAT_TEST_PASSWORD_FILE=/path/to/pw \\
    ICAT_TEST_USER=jdoe [ICAT_TEST_USER_TEMPLATE='db/{username}'] [ICAT_TEST_FACILITY=ESRF] \\
    [ICAT_TEST_CA_FILE=/etc/ssl/ca.pem] \\
        <venv>/bin/pytest tests/test_sources_icat_contract.py -rs

It checks that the server accepts every query the adapter sends (user lookup,
investigations with each filter, a user name containing a quote, dataset
locations), and that ICAT_TEST_USER has an account and, if
ICAT_TEST_EXPECT_PROPOSAL is set, that proposal.
"""

from __future__ import annotations

import os

import pytest

from daas_hub.model import Account, Identity
from daas_hub.sources import IcatProposalSource

ENV = os.environ

pytestmark = pytest.mark.skipif(
    not ENV.get("ICAT_TEST_URL"),
    reason="not run: set ICAT_TEST_URL, ICAT_TEST_AUTH, ICAT_TEST_READER, ICAT_TEST_PASSWORD_FILE and "
           "ICAT_TEST_USER to run this contract test against a real ICAT (docs/sources/icat.md)",
)


def _source(**kwargs) -> IcatProposalSource:
    settings = dict(
        url=ENV.get("ICAT_TEST_URL", ""), auth=ENV.get("ICAT_TEST_AUTH", "simple"),
        reader_username=ENV.get("ICAT_TEST_READER", ""), password_file=ENV.get("ICAT_TEST_PASSWORD_FILE", ""),
        password=ENV.get("ICAT_TEST_PASSWORD", ""), user_name_template=ENV.get("ICAT_TEST_USER_TEMPLATE", "{username}"),
        facility=ENV.get("ICAT_TEST_FACILITY", ""), ca_file=ENV.get("ICAT_TEST_CA_FILE", ""), timeout=60,
    )
    settings.update(kwargs)
    source = IcatProposalSource(**settings)
    source.check()
    return source


async def test_the_real_icat_answers_the_adapters_queries():
    source = _source()
    try:
        username = ENV["ICAT_TEST_USER"]
        account = await source.resolve_account(Identity("facility", username, username=username))
        assert account is not None, f"ICAT has no user for {username!r} (check ICAT_TEST_USER_TEMPLATE)"
        proposals = await source.proposals_for(account)
        print(f"{username}: {len(proposals)} proposals: {', '.join(p.id for p in proposals[:10])}")
        expected = ENV.get("ICAT_TEST_EXPECT_PROPOSAL")
        if expected:
            assert expected in {p.id for p in proposals}
        # a quote in the name must reach the server as part of a string literal
        assert await source.resolve_account(Identity("facility", "o'x", username="o'contract-test")) is None
        assert await source.proposals_for(Account("o'contract-test")) == []
    finally:
        await source.close()


async def test_the_real_icat_accepts_the_filter_and_dataset_queries():
    source = _source(instruments=["no-such-instrument", "it's"], roles=["principal_experimenter"],
                     data_location="datasets")
    try:
        username = ENV["ICAT_TEST_USER"]
        assert await source.proposals_for(Account(username)) == []
        everything = _source(data_location="datasets")
        try:
            await everything.proposals_for(Account(username))
        finally:
            await everything.close()
    finally:
        await source.close()
