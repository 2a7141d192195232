"""Where proposals come from: one module per catalogue, one interface for all."""

from .base import ProposalSource
from .yaml_source import YamlProposalSource

#: short names usable in the site settings file (``proposal_source: {kind: yaml}``)
SOURCE_KINDS = {"yaml": YamlProposalSource}

__all__ = ["ProposalSource", "YamlProposalSource", "SOURCE_KINDS"]
