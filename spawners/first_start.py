"""Sessions for people who have not signed in yet.

An admin's start, an instructor's "start all" for a class, or a REST API call may
start a server for a hub user the hub has no ``auth_state`` for (they never
signed in). The spawner then asks the login's ``proposal_lookup`` (the proposal
mapping's source, :meth:`~daas_hub.authenticators.mapping.ProposalMapping.lookup`)
for the account and proposals, keeps them in ``auth_state`` as a login would,
and applies the same policy as a login.

The login is reached explicitly: every daas-hub login is a
:class:`~daas_hub.authenticators.mapping.ProposalLogin` and publishes
``proposal_lookup``; under any other authenticator there is no lookup and such
a start is refused with a sentence, as before.
"""

from __future__ import annotations

from daas_hub.access import LoginPolicy, ProposalLookup, read_auth_state
from daas_hub.authenticators.mapping import ProposalLogin
from daas_hub.errors import SourceUnavailable
from daas_hub.model import Account, Proposal


def lookup_for(authenticator) -> ProposalLookup | None:
    """The login's ``proposal_lookup``, or None for a login that is not a daas-hub one."""
    if isinstance(authenticator, ProposalLogin):
        return authenticator.proposal_lookup
    return None


class FirstStartRefused(Exception):
    """No account could be read for a user who has not signed in; ``message`` says why, for a person."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.message = message
        self.reason = reason


async def account_from_source(
    user, lookup: ProposalLookup, policy: LoginPolicy, *, state: dict | None, log, manage_groups: bool,
) -> tuple[Account, list[Proposal]]:
    """Read ``user``'s account and proposals from the source and keep them in ``auth_state``.

    ``state`` is the user's current auth_state (kept, the daas entry added). With
    ``manage_groups`` the user's proposal groups are set as a login sets them.
    Raises :class:`FirstStartRefused` when the catalogue does not answer or has no
    usable account for the user. The access decision is the caller's.
    """
    try:
        model = await lookup(user.name)
    except SourceUnavailable as e:
        log.error("Proposal source unavailable for the first start of %s: %s", user.name, e)
        raise FirstStartRefused(
            f"{user.name} has not signed in yet, and the proposal catalogue of {policy.facility_name} "
            f"did not answer, so the hub cannot tell which proposals they are on. Please try again in "
            f"a few minutes; if it persists, contact {policy.contact}.",
            reason="source-unavailable",
        ) from None
    if model is None:
        raise FirstStartRefused(
            f"{user.name} has not signed in yet and is not an account of {policy.facility_name} the hub "
            f"can use, so no session was started. Check the user name, or contact {policy.contact}.",
            reason="no-account",
        )
    log.info("%s has not signed in yet: read their account and proposals from the catalogue", user.name)
    await user.save_auth_state({**(state or {}), **model["auth_state"]})
    if manage_groups:
        user.sync_groups(model["groups"])
    return read_auth_state(model["auth_state"])
