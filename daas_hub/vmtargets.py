"""Facility virtual machines a user may open through the VM gateway (guacd).

The site lists its machines in a YAML file (docs/desktops.md) checked against
``daas_hub/schemas/vm-targets.schema.yaml``. :func:`targets_for` is the pure rule
the VM gateway (:mod:`daas_hub.proxies.gateway`, a hub service outside every
session account) applies at each connection: from the user's account roles and
live proposals it picks the machines they may open; the gateway accepts no other.

The file holds no secrets: a target's credentials (``password``, ``private-key``,
...) live in its ``credentials`` file, readable by the gateway's account only
(:func:`read_credentials`). Parameters only the gateway sets (recording) are
refused in the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import SettingsError
from .model import Account, Proposal
from .schema import read_yaml, validate

#: guacd parameters that are secrets: only in a target's credentials file
SECRET_PARAMETERS = frozenset({"password", "private-key", "passphrase", "public-key"})
#: guacd parameters only the gateway sets (session recording, docs/desktops.md#recording)
GATEWAY_PARAMETERS = frozenset({
    "recording-path", "recording-name", "create-recording-path", "recording-exclude-output",
    "recording-exclude-mouse", "recording-include-keys", "recording-exclude-touch",
    "typescript-path", "typescript-name", "create-typescript-path",
})


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
    #: the file with the target's secret parameters (empty: none)
    credentials: str = ""

    def public(self) -> dict:
        """What the browser may know: no host, no credentials."""
        return {"id": self.id, "title": self.title, "protocol": self.protocol}


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
        for name in t["parameters"]:
            where = f'targets[{i}] "{t["id"]}" > parameters > {name}'
            if name in SECRET_PARAMETERS:
                raise SettingsError(file, where, "a secret in the targets file",
                                    "move it to the target's credentials file, readable by the VM gateway's "
                                    "account only (docs/desktops.md#credentials)")
            if name in GATEWAY_PARAMETERS:
                raise SettingsError(file, where, "only the VM gateway sets this parameter",
                                    "remove it; turn recording on with VmGateway.recording_dir "
                                    "(docs/desktops.md#recording)")
        params = tuple(sorted((k, str(v).lower() if isinstance(v, bool) else str(v))
                              for k, v in t["parameters"].items()))
        out.append(VmTarget(
            id=t["id"], title=t["title"], protocol=t["protocol"], parameters=params,
            roles=frozenset(allow.get("roles", ())), proposals=frozenset(allow.get("proposals", ())),
            instruments=frozenset(allow.get("instruments", ())),
            proposal_roles=frozenset(allow.get("proposal_roles", ())),
            credentials=_path(file, t.get("credentials", "")),
        ))
    return tuple(out)


def load_targets(path: str | Path) -> tuple[VmTarget, ...]:
    document = read_yaml(path, what="VM targets",
                         fix_missing="create it (docs/desktops.md has an example) or unset VmGateway.targets_file")
    return parse_targets(document, path)


def _path(file: str | Path, value: str) -> str:
    """A path from the targets file, relative to the file's folder."""
    if not value:
        return ""
    return str(Path(file).parent / value) if not Path(value).is_absolute() else value


def parse_credentials(document, file: str | Path, target_id: str) -> dict[str, str]:
    """A credentials file's parameters (a flat YAML mapping of guacd parameter names)."""
    if not isinstance(document, dict) or not document:
        raise SettingsError(file, "", f"the credentials of VM target {target_id!r} are not a mapping",
                            "write the guacd parameters as `name: value` lines (username, password, ...)")
    out = {}
    for name, value in document.items():
        if name in GATEWAY_PARAMETERS or name == "hostname":
            raise SettingsError(file, str(name), "not a credential",
                                "keep only credentials here (username, password, private-key, passphrase, domain)")
        if not isinstance(value, (str, int, bool)):
            raise SettingsError(file, str(name), "expected a single value", "write `name: value`")
        out[str(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def check_private(stat, *, owner: int, file: str | Path, target_id: str) -> None:
    """A credentials file must belong to ``owner`` (the gateway's account) and be private."""
    if stat.st_uid != owner or stat.st_mode & 0o077:
        raise SettingsError(file, "(file mode)",
                            f"the credentials of VM target {target_id!r} are readable by other accounts "
                            f"(owner uid {stat.st_uid}, mode {stat.st_mode & 0o777:o})",
                            f"chown it to the VM gateway's account (uid {owner}) and chmod 0600")


def read_credentials(target: VmTarget, *, owner: int) -> dict[str, str]:
    """The secret parameters of ``target`` from its credentials file; raises SettingsError."""
    if not target.credentials:
        return {}
    try:
        fd = os.open(target.credentials, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise SettingsError(target.credentials, "", f"cannot read the credentials of VM target "
                            f"{target.id!r} ({e.strerror})", "create it, owned by the gateway's account, mode 0600") from None
    with os.fdopen(fd) as f:
        check_private(os.fstat(f.fileno()), owner=owner, file=target.credentials, target_id=target.id)
        document = yaml.safe_load(f)
    return parse_credentials(document, target.credentials, target.id)


def connection_parameters(target: VmTarget, credentials: dict[str, str], *, recording: dict[str, str] | None = None
                          ) -> dict[str, str]:
    """Everything guacd gets for ``target``: the file's parameters, the credentials, the recording."""
    return {**dict(target.parameters), **credentials, **(recording or {})}


def recording_parameters(recording_dir: str, *, user: str, target_id: str) -> dict[str, str]:
    """guacd's recording parameters for one connection (only the gateway sets them); pure.

    One folder per user under ``recording_dir``; guacd names the file with the date
    and time of the connection.
    """
    if not recording_dir:
        return {}
    return {
        "recording-path": f"{recording_dir.rstrip('/')}/{user}",
        "create-recording-path": "true",
        "recording-name": f"{target_id}-${{GUAC_DATE}}-${{GUAC_TIME}}",
    }


def is_live(proposal: Proposal) -> bool:
    """A proposal that gives access to VMs: one that has not ended (not archived)."""
    return proposal.mountable


def may_open(target: VmTarget, account: Account, proposals: Iterable[Proposal]) -> bool:
    """True if ``account`` may open ``target``: by role, or as a member of a matching live proposal."""
    if target.roles & set(account.roles):
        return True
    for p in proposals:
        if not is_live(p):  # an ended (archived) proposal gives no access
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
    """The machines ``account`` may open now, in the file's order."""
    proposals = tuple(proposals)
    return tuple(t for t in targets if may_open(t, account, proposals))
