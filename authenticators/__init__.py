"""Authenticators for daas-hub (``daas_hub.authenticators``).

Every login, whatever the identity provider, goes through
:class:`~daas_hub.authenticators.mapping.ProposalMapping`: identity -> facility
account -> proposals, stored encrypted in ``auth_state``.
"""

from .mapping import ProposalMapping

__all__ = ["ProposalMapping"]
