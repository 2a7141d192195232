"""The spawn form's content: plain values in, the template's variables out.

:func:`form_context` builds every variable of ``templates/options_form.html``
from the person's :class:`~daas_hub.options.SpawnContext`, their last choice, a
permalink's query and what the cluster said it has free. Pure: no JupyterHub
imports, no I/O; the spawner (``daas_hub.spawners.wrapper``) gathers the inputs
and renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .options import NO_PROPOSAL, OPTION_NAMES, OptionError, SpawnContext, validate_options
from .quotas import GIB, ledger, quota_role


@dataclass(frozen=True)
class ClusterFigures:
    """What a batch backend last said it has free, for the form.

    ``partitions`` holds rows with ``partition``, ``state``, ``cpus_idle``,
    ``cpus_total``, ``memory_free_mb`` and ``gres``; None when there is no fresh
    figure (the form says "unknown").
    """

    backend: str
    partitions: tuple | None


def plain(value):
    """A user_options value as one scalar (forms send one-element lists), else None."""
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def query_options(arguments: Mapping[str, Sequence[bytes]]) -> dict:
    """A permalink's options from the request's query arguments (``opt-cpu=4`` or ``cpu=4``)."""
    out = {}
    for key, vals in arguments.items():
        name = key[4:] if key.startswith("opt-") else key
        if name in OPTION_NAMES and vals:
            out[name] = vals[-1].decode("utf8", "replace")
    return out


def prefill(ctx: SpawnContext, last: Mapping, query: Mapping) -> dict:
    """Defaults, overridden by the last choice, overridden by a permalink's query.

    The last choice counts only if it would still be accepted: stored options may
    come from a refused start (the REST API keeps whatever was posted), and a form
    prefilled with them would be refused again.
    """
    values = dict(ctx.defaults())
    last = {name: plain(last.get(name)) for name in OPTION_NAMES if plain(last.get(name)) is not None}
    try:
        validate_options(last, ctx)
    except OptionError:
        last = {}
    for source in (last, query):
        for name in OPTION_NAMES:
            value = plain(source.get(name))
            if value is not None:
                values[name] = value
    return values


def _profile_entry(profile, backends: list[str]) -> dict:
    return {
        "slug": profile.slug, "name": profile.name, "description": profile.description,
        "instruments": list(profile.instruments), "backends": backends,
        "default": {"cpu": int(profile.default.cpu), "memory": profile.default.memory / GIB,
                    "gpu": profile.default.gpu, "hours": profile.default.hours},
        "max": {"cpu": int(profile.max.cpu), "memory": profile.max.memory / GIB,
                "gpu": profile.max.gpu, "hours": profile.max.hours},
    }


def form_context(ctx: SpawnContext, *, last: Mapping, query: Mapping, cluster: ClusterFigures | None,
                 quota_url: str) -> dict:
    """Every variable of the form template (``cluster`` None: no batch backend offered)."""
    book = ledger(ctx.quota, ctx.others)
    profiles = []
    for p in ctx.catalogue.profiles:
        backends = ctx.backends_for(p)
        if backends:
            profiles.append(_profile_entry(p, backends))
    return {
        "cluster": cluster,
        "quota_url": quota_url,
        "proposals": [{"id": p.id, "title": p.title, "instrument": p.instrument}
                      for p in ctx.selectable_proposals()],
        "no_proposal": ctx.no_proposal_allowed,
        "no_proposal_value": NO_PROPOSAL,
        "profiles": profiles,
        "values": prefill(ctx, last, query),
        "role": quota_role(ctx.account.roles),
        "quota": book.quota, "used": book.used, "left": book.left, "gib": GIB,
        "others": [o.to_options() for o in ctx.others],
    }
