"""Who may have a session, and what the hub remembers about them.

Pure functions shared by every authenticator and spawner: the access decision
(proposal holders, staff, training participants) and the ``auth_state`` layout
that carries the account and proposals from login to spawn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .model import Account, Proposal, UnsafeValue

STATE_KEY = "daas"

#: roles that may have a session without holding a proposal (when allowed)
STAFF_ROLES = frozenset({"staff", "admin"})
#: roles of people in a training session: they get a session without a proposal
TRAINING_ROLES = frozenset({"instructor", "training"})


@dataclass(frozen=True)
class LoginPolicy:
    """What the login decided about who may have a session, as one frozen value.

    The login publishes it (``Authenticator.login_policy``, from
    :class:`~daas_hub.authenticators.mapping.ProposalMapping`'s settings) and every
    spawner receives it explicitly; nothing looks for it by attribute name.
    """

    #: the facility's name, as shown in messages
    facility_name: str = "the facility"
    #: whom users should contact about access, as shown in messages
    contact: str = "the facility's user office"
    #: staff and admins may have sessions without a proposal
    staff_without_proposal: bool = True

    def decide(self, account: Account | None, proposals: list[Proposal], *, who: str) -> AccessDecision:
        """:func:`decide_access` under this policy."""
        return decide_access(account, proposals, policy=self, who=who)


#: what a login publishes as ``proposal_lookup``: hub user name -> ``{"auth_state", "groups"}``
#: read from the proposal source, or None if the name is no account of the facility
#: (:meth:`daas_hub.authenticators.mapping.ProposalMapping.lookup`)
ProposalLookup = Callable[[str], Awaitable[dict | None]]


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    reason: str  # short label: "proposal", "staff", "training", "no-account", "no-proposal"
    message: str  # what the person reads


def decide_access(
    account: Account | None,
    proposals: list[Proposal],
    *,
    policy: LoginPolicy,
    who: str,
) -> AccessDecision:
    """May ``account`` have a session? ``who`` is how the person signed in."""
    facility, contact = policy.facility_name, policy.contact
    if account is None:
        return AccessDecision(
            False, "no-account",
            f"You signed in as {who}, but that identity is not linked to an account at "
            f"{facility}, so there is no data here for you to analyse. If you hold or "
            f"joined a proposal at {facility}, ask {contact} to link this identity to it.",
        )
    if any(p.role_of(account.username) for p in proposals):
        return AccessDecision(True, "proposal", "")
    if policy.staff_without_proposal and account.roles & STAFF_ROLES:
        return AccessDecision(True, "staff", "")
    if account.roles & TRAINING_ROLES:
        return AccessDecision(True, "training", "")
    return AccessDecision(
        False, "no-proposal",
        f"You are signed in as {who} (account {account.username}), but you are not on any "
        f"proposal at {facility}, so no session was started. If you should be on a "
        f"proposal, ask its principal investigator to add you, or contact {contact}.",
    )


def make_auth_state(
    account: Account, proposals: list[Proposal], *, now: datetime | None = None, stale: bool = False
) -> dict:
    """The ``auth_state`` entry for ``account``; ``stale`` marks a catalogue outage."""
    now = now or datetime.now(UTC)
    return {
        STATE_KEY: {
            "account": account.to_dict(),
            "proposals": [p.to_dict() for p in proposals],
            "fetched_at": now.isoformat(),
            "stale": stale,
        }
    }


def read_auth_state(auth_state: dict | None) -> tuple[Account, list[Proposal]] | None:
    """``(account, proposals)`` from ``auth_state``, or None if it has none."""
    entry = (auth_state or {}).get(STATE_KEY)
    if not entry:
        return None
    try:
        return Account.from_dict(entry["account"]), [Proposal.from_dict(p) for p in entry["proposals"]]
    except UnsafeValue:  # written before ids and names were checked: the next login rewrites it
        return None


def proposal_groups(proposals: list[Proposal], username: str) -> list[str]:
    """JupyterHub group names, one per proposal the user is on."""
    return sorted(f"proposal-{p.id}" for p in proposals if p.role_of(username))


def stale_notice(auth_state: dict | None, *, facility: str) -> str | None:
    """What to tell a person whose proposals came from the cache during a catalogue
    outage (``stale`` in ``auth_state``), or None if they are current."""
    entry = (auth_state or {}).get(STATE_KEY) or {}
    if not entry.get("stale"):
        return None
    return (
        f"The proposal catalogue of {facility} is not answering, so your session uses the "
        f"proposals it last listed for you. A proposal added since then will appear once the "
        f"catalogue is back (sign out and in again)."
    )
