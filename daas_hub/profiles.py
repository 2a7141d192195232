"""Technique profiles: what software a session gets and how much it may use.

A catalogue is a YAML file (docs/profiles.md) checked against
``daas_hub/schemas/profiles.schema.yaml``. The default catalogue ships in
``daas_hub/data/profiles.yaml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import SettingsError
from .schema import read_yaml, validate

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_memory(text: str) -> int:
    """``"4G"`` -> bytes. Raises ValueError for anything else."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMGT]?)", str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a memory size such as 4G or 512M")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


@dataclass(frozen=True)
class Resources:
    cpu: float
    memory: int  # bytes
    gpu: int
    hours: float


_BUILTIN_DEFAULT = Resources(cpu=1, memory=2 * 1024**3, gpu=0, hours=4)
_FIELDS = ("cpu", "memory", "gpu", "hours")


@dataclass(frozen=True)
class Profile:
    slug: str
    name: str
    description: str
    backends: tuple[str, ...]
    instruments: tuple[str, ...] = ()
    image: str | None = None  # Kubernetes
    kube_node_selector: dict = field(default_factory=dict)
    kube_tolerations: tuple[dict, ...] = ()
    slurm_environment: str = ""
    apptainer_image: str | None = None
    local_environment: dict = field(default_factory=dict)
    default: Resources = _BUILTIN_DEFAULT
    max: Resources = _BUILTIN_DEFAULT

    @property
    def gpu_allowed(self) -> bool:
        return self.max.gpu > 0

    def suits(self, instrument: str | None) -> bool:
        """True if the profile is meant for ``instrument`` (or for every one)."""
        return not self.instruments or instrument is None or instrument in self.instruments


@dataclass(frozen=True)
class ProfileCatalogue:
    profiles: tuple[Profile, ...]
    file: str

    def get(self, slug: str) -> Profile:
        for p in self.profiles:
            if p.slug == slug:
                return p
        raise KeyError(slug)

    @property
    def slugs(self) -> list[str]:
        return [p.slug for p in self.profiles]

    def available(self, *, backend: str | None = None, instrument: str | None = None) -> list[Profile]:
        return [
            p for p in self.profiles
            if (backend is None or backend in p.backends) and p.suits(instrument)
        ]

    def select(self, slugs: list[str], *, entry: str, settings_file: str) -> ProfileCatalogue:
        """Keep only ``slugs`` (in that order); an unknown slug is a SettingsError."""
        chosen = []
        for i, slug in enumerate(slugs):
            try:
                chosen.append(self.get(slug))
            except KeyError:
                raise SettingsError(
                    settings_file, f"{entry}[{i}]", f'unknown profile "{slug}"',
                    f"use one of the profiles in {self.file}: {', '.join(self.slugs)}",
                ) from None
        return ProfileCatalogue(tuple(chosen), self.file)


def _resources(d: dict | None, fallback: Resources) -> Resources:
    d = d or {}
    return Resources(
        cpu=float(d.get("cpu", fallback.cpu)),
        memory=parse_memory(d["memory"]) if "memory" in d else fallback.memory,
        gpu=int(d.get("gpu", fallback.gpu)),
        hours=float(d.get("hours", fallback.hours)),
    )


def parse_catalogue(document: dict, file: str) -> ProfileCatalogue:
    """Build a catalogue from a parsed YAML document; pure."""
    validate(document, "profiles", file)
    profiles, seen = [], set()
    for i, p in enumerate(document["profiles"]):
        entry = f'profiles[{i}] "{p["slug"]}"'
        if p["slug"] in seen:
            raise SettingsError(file, entry, "this profile slug is listed twice", "give each profile its own slug")
        seen.add(p["slug"])
        res = p.get("resources", {})
        # what the default does not say comes from the built-in default, capped by the max
        written_max = _resources(res.get("max"), _BUILTIN_DEFAULT)
        capped = Resources(**{n: min(getattr(_BUILTIN_DEFAULT, n), getattr(written_max, n)) for n in _FIELDS})
        default = _resources(res.get("default"), capped)
        maximum = _resources(res.get("max"), default)
        for name in _FIELDS:
            if getattr(default, name) > getattr(maximum, name):
                raise SettingsError(
                    file, f"{entry} > resources > default > {name}",
                    f"the default {name} is larger than the maximum",
                    f"lower resources.default.{name} or raise resources.max.{name}",
                )
        if "kubernetes" in p["backends"] and not p.get("kubernetes", {}).get("image"):
            raise SettingsError(
                file, entry, "the profile offers the kubernetes backend but names no image",
                "add kubernetes: {image: ...} or remove kubernetes from backends",
            )
        profiles.append(
            Profile(
                slug=p["slug"],
                name=p["name"],
                description=p["description"],
                backends=tuple(p["backends"]),
                instruments=tuple(p.get("instruments", ())),
                image=p.get("kubernetes", {}).get("image"),
                kube_node_selector=dict(p.get("kubernetes", {}).get("node_selector", {})),
                kube_tolerations=tuple(p.get("kubernetes", {}).get("tolerations", ())),
                slurm_environment=p.get("slurm", {}).get("environment", ""),
                apptainer_image=p.get("slurm", {}).get("apptainer_image"),
                local_environment=dict(p.get("local", {}).get("environment", {})),
                default=default,
                max=maximum,
            )
        )
    return ProfileCatalogue(tuple(profiles), str(file))


def default_catalogue_path() -> Path:
    return Path(str(resources.files("daas_hub.data").joinpath("profiles.yaml")))


def load_catalogue(path: str | Path | None = None) -> ProfileCatalogue:
    """Read and check a catalogue file; the packaged default when ``path`` is None."""
    path = Path(path) if path else default_catalogue_path()
    document = read_yaml(
        path, what="profile catalogue",
        fix_missing="create it (docs/profiles.md) or remove profiles.catalogue to use the default",
    )
    return parse_catalogue(document, str(path))
