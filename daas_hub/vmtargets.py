"""Facility virtual machines a user may open in their session (through guacd).

The site lists its machines in a YAML file (docs/desktops.md) checked against
``daas_hub/schemas/vm-targets.schema.yaml``. :func:`targets_for` is the pure rule
the hub applies at spawn time: from the user's account roles and proposals it
picks the machines they may open. The spawner passes the result to the session
(``$DAAS_HUB_VM_TARGETS``); the session's bridge accepts no other target.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SettingsError
from .model import Account, Proposal
from .schema import read_yaml, validate

TARGETS_ENV = "DAAS_HUB_VM_TARGETS"
GUACD_ENV = "DAAS_HUB_GUACD"


@dataclass(frozen=True)
class VmTarget:
    id: str
    title: str
    protocol: str
    parameters: tuple[tuple[str, str], ...]
    roles: frozenset[str] = frozenset()
    proposals: frozenset[str] = frozenset()
    instruments: frozenset[str] = frozenset()
    proposal_roles: frozenset[str] = field(default_factory=frozenset)


def parse_targets(document, file: str | Path) -> tuple[VmTarget, ...]:
    if document is None:
        raise SettingsError(file, "", "the VM targets file is empty", "list the machines under 'targets:'")
    validate(document, "vm-targets", file)
    out, seen = [], set()
    for i, t in enumerate(document["targets"]):
        if t["id"] in seen:
            raise SettingsError(file, f'targets[{i}] "{t["id"]}" > id', "this id is used by an earlier machine",
                                "give each machine its own id")
        seen.add(t["id"])
        allow = t["allow"]
        params = tuple(sorted((k, str(v).lower() if isinstance(v, bool) else str(v))
                              for k, v in t["parameters"].items()))
        out.append(VmTarget(
            id=t["id"], title=t["title"], protocol=t["protocol"], parameters=params,
            roles=frozenset(allow.get("roles", ())), proposals=frozenset(allow.get("proposals", ())),
            instruments=frozenset(allow.get("instruments", ())),
            proposal_roles=frozenset(allow.get("proposal_roles", ())),
        ))
    return tuple(out)


def load_targets(path: str | Path) -> tuple[VmTarget, ...]:
    document = read_yaml(path, what="VM targets",
                         fix_missing="create it (docs/desktops.md has an example) or unset LocalSpawner.vm_targets_file")
    return parse_targets(document, path)


def may_open(target: VmTarget, account: Account, proposals: Iterable[Proposal]) -> bool:
    """True if ``account`` may open ``target``: by role, or as a member of a matching live proposal."""
    if target.roles & set(account.roles):
        return True
    for p in proposals:
        if not p.mountable:  # an archived proposal gives no access
            continue
        role = p.role_of(account.username)
        if role is None:
            continue
        if target.proposal_roles and role.value not in target.proposal_roles:
            continue
        if p.id in target.proposals or p.instrument in target.instruments:
            return True
    return False


def targets_for(account: Account, proposals: Iterable[Proposal], targets: Iterable[VmTarget]) -> tuple[VmTarget, ...]:
    proposals = tuple(proposals)
    return tuple(t for t in targets if may_open(t, account, proposals))


def targets_env(targets: Iterable[VmTarget]) -> str:
    """The session's allow-list, as JSON for ``$DAAS_HUB_VM_TARGETS``."""
    return json.dumps([
        {"id": t.id, "title": t.title, "protocol": t.protocol, "parameters": dict(t.parameters)}
        for t in targets
    ], sort_keys=True)
