"""The data-mount plan: which proposal folders a session sees, and how.

:func:`plan_mounts` is pure: from a user and their proposals it builds the folder
view ``~/proposals/<id>/raw`` (read-only) and ``~/proposals/<id>/processed``
(read-write, shared by the team). Each backend applies the plan its own way: the
local and Slurm backends as symbolic links made by the session itself
(:mod:`daas_hub.session`), Kubernetes as volumes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .model import Proposal, ProposalState

DEFAULT_ROOT = "proposals"
#: the notices plan_mounts writes; the session manages these names and no others
ARCHIVED_NOTICE = "ARCHIVED-README.txt"
NO_DATA_NOTICE = "NO-DATA-README.txt"
#: written by the session in place of a raw or processed folder that is not there
MISSING_NOTICES = {"raw": "RAW-DATA-MISSING-README.txt", "processed": "PROCESSED-DATA-MISSING-README.txt"}
NOTICE_NAMES = (ARCHIVED_NOTICE, NO_DATA_NOTICE, *MISSING_NOTICES.values())


@dataclass(frozen=True)
class MountEntry:
    """``path`` (relative to the session's home) shows ``source``."""

    path: str
    source: str
    read_only: bool
    proposal: str


@dataclass(frozen=True)
class Notice:
    """A short text file the session shows in place of data (archived, missing)."""

    path: str
    text: str
    proposal: str


@dataclass(frozen=True)
class MountPlan:
    root: str
    proposals: tuple[str, ...]
    mounts: tuple[MountEntry, ...]
    notices: tuple[Notice, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MountPlan:
        d = json.loads(text)
        return cls(
            root=d["root"],
            proposals=tuple(d["proposals"]),
            mounts=tuple(MountEntry(**m) for m in d["mounts"]),
            notices=tuple(Notice(**n) for n in d["notices"]),
        )


def _archived_text(p: Proposal, data_portal_url: str | None) -> str:
    where = f" at {data_portal_url}" if data_portal_url else ""
    return (
        f"Proposal {p.id} ({p.title}) is archived: its data is no longer on the online\n"
        f"storage, so it is not mounted in this session.\n\n"
        f"Restore it through the data portal{where}; once restored, start a new\n"
        f"session and it will appear here.\n"
    )


def plan_mounts(
    username: str,
    proposals: list[Proposal],
    *,
    root: str = DEFAULT_ROOT,
    data_portal_url: str | None = None,
) -> MountPlan:
    """The folder view for ``username``: only proposals they are a member of."""
    mounts: list[MountEntry] = []
    notices: list[Notice] = []
    ids: list[str] = []
    for p in sorted(proposals, key=lambda p: p.id):
        if p.role_of(username) is None or p.id in ids:
            continue
        ids.append(p.id)
        base = f"{root}/{p.id}"
        if p.state is ProposalState.ARCHIVED:
            notices.append(Notice(f"{base}/{ARCHIVED_NOTICE}", _archived_text(p, data_portal_url), p.id))
            continue
        if p.data.raw:
            mounts.append(MountEntry(f"{base}/raw", p.data.raw, True, p.id))
        if p.data.processed:
            mounts.append(MountEntry(f"{base}/processed", p.data.processed, False, p.id))
        if not (p.data.raw or p.data.processed):
            notices.append(
                Notice(
                    f"{base}/{NO_DATA_NOTICE}",
                    f"Proposal {p.id} has no data location in the catalogue yet.\n"
                    f"Ask your local contact if you expected data here.\n",
                    p.id,
                )
            )
    return MountPlan(root=root, proposals=tuple(ids), mounts=tuple(mounts), notices=tuple(notices))


def missing_text(proposal: str, kind: str, source: str) -> str:
    """The notice a session shows where a proposal's ``kind`` folder should be."""
    return (
        f"The {kind} data of proposal {proposal} should be in {source},\n"
        f"but that folder does not exist or this session cannot open it, so there is\n"
        f"no '{kind}' link here. The hub's log names the same path. Tell your local\n"
        f"contact or the facility's user office; once the folder is there, start a new\n"
        f"session and the link appears.\n"
    )


def missing_sources(plan: MountPlan, is_dir=None) -> list[MountEntry]:
    """The plan's mounts whose source folder ``is_dir`` (default: the local file
    system, as the caller sees it) does not find."""
    import os

    is_dir = is_dir or os.path.isdir
    return [m for m in plan.mounts if not is_dir(m.source)]


def describe_missing(entry: MountEntry) -> str:
    """One log line for a missing data folder: what, where, and what to fix."""
    kind = "raw" if entry.read_only else "processed"
    return (f"proposal {entry.proposal}: the {kind} data folder {entry.source} does not exist; "
            f"sessions show a notice instead of the link. Fix the proposal's data location in the "
            f"proposal source, or create the folder")
