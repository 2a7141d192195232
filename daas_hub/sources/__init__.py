"""Where proposals come from: one module per catalogue, one interface for all."""

from .base import ProposalList, ProposalSource, is_stale
from .cache import CachedProposalSource
from .chain import ChainedProposalSource
from .icat_source import IcatProposalSource
from .scicat_source import ScicatProposalSource
from .sql_source import SqlProposalSource
from .yaml_source import YamlProposalSource

#: short names usable in the site settings file (``proposal_source: {kind: yaml}``)
SOURCE_KINDS = {
    "yaml": YamlProposalSource,
    "icat": IcatProposalSource,
    "scicat": ScicatProposalSource,
    "sql": SqlProposalSource,
}

__all__ = [
    "CachedProposalSource",
    "ChainedProposalSource",
    "IcatProposalSource",
    "ProposalList",
    "ProposalSource",
    "SOURCE_KINDS",
    "ScicatProposalSource",
    "SqlProposalSource",
    "YamlProposalSource",
    "is_stale",
]
