"""Teams: who a session may be shared with (docs/teams.md).

Pure rules, no JupyterHub: the owner of a session shares it with members of the
session's proposal, and only with them. Support staff are invited like anyone
else (a local contact is a member of the proposal); nobody sees a share they
were not invited to. The hub side (:mod:`daas_hub.spawners.teams`) grants
JupyterHub shares (``access:servers!server=<owner>/<server>``).
"""

from __future__ import annotations

from .model import Proposal

#: the session's endpoint the hub calls after a revoke (:mod:`daas_hub.spawners.visitors`)
VISITORS_RECHECK_PATH = "api/daas/visitors/recheck"


def invitable(proposal: Proposal | None, owner: str) -> list[str]:
    """Members of the session's proposal the owner may invite (everyone on it but the owner)."""
    if proposal is None:
        return []
    return sorted({m.username for m in proposal.members} - {owner})


def share_refusal(proposal: Proposal | None, owner: str, invitee: str) -> str | None:
    """Why ``invitee`` cannot be invited to ``owner``'s session on ``proposal`` (a sentence), or None."""
    if proposal is None:
        return ("This session belongs to no proposal, so it cannot be shared: a session is shared "
                "with the members of its proposal.")
    if invitee == owner:
        return "You cannot share a session with yourself."
    if invitee not in invitable(proposal, owner):
        return (f"{invitee} is not a member of proposal {proposal.id}, so this session cannot be shared "
                f"with them. Only members of the session's proposal can be invited; its principal "
                f"investigator can ask the user office to add someone to the proposal.")
    return None
