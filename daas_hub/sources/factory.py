"""Build the proposal source from the site settings' ``proposal_source`` entry.

Every key of an entry is a traitlet of its source class (``url`` ->
``IcatProposalSource.url``), so the settings file and ``jupyterhub_config.py``
configure the same things. Remote sources (icat, scicat, sql, chain) get the
cache in front of them unless ``cache: {enabled: false}``; the YAML source only
if the entry has a ``cache`` key.
"""

from __future__ import annotations

from traitlets.config import Config

from ..errors import SettingsError
from . import SOURCE_KINDS
from .base import ProposalSource
from .cache import CachedProposalSource
from .chain import ChainedProposalSource

_NOT_TRAITS = ("kind", "cache", "accounts", "proposals")


def _configure(config: Config, entry: dict, where: str) -> type[ProposalSource]:
    kind = entry["kind"]
    if kind not in SOURCE_KINDS:
        raise SettingsError("site settings", f"{where} > kind", f'"{kind}" cannot be used here',
                            f"use one of: {', '.join(SOURCE_KINDS)}")
    cls = SOURCE_KINDS[kind]
    section = config[cls.__name__]
    for key, value in entry.items():
        if key not in _NOT_TRAITS:
            section[key] = value
    return cls


def source_config(entry: dict) -> tuple[type[ProposalSource], Config]:
    """The class to give ``ProposalMapping.source_class``, and the config for it."""
    config = Config()
    kind = entry["kind"]
    if kind == "chain":
        top: type[ProposalSource] = ChainedProposalSource
        config.ChainedProposalSource.account_source_class = _configure(config, entry["accounts"],
                                                                       "proposal_source > accounts")
        config.ChainedProposalSource.proposal_source_classes = [
            _configure(config, e, f"proposal_source > proposals[{i}]") for i, e in enumerate(entry.get("proposals", []))
        ]
    else:
        top = _configure(config, entry, "proposal_source")
    cache = dict(entry.get("cache") or {})
    enabled = cache.pop("enabled", kind != "yaml" or "cache" in entry)
    if enabled:
        config.CachedProposalSource.source_class = top
        for key, value in cache.items():
            config.CachedProposalSource[key] = value
        top = CachedProposalSource
    return top, config


def build_source(entry: dict) -> ProposalSource:
    """A source built from a settings entry (for ``daas-hub check`` and ``daas-hub proposals``)."""
    cls, config = source_config(entry)
    return cls(config=config)
