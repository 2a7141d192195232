"""The site settings file: the few facts a facility admin writes down once.

Read by ``jupyterhub_config.py`` through :func:`daas_hub.config.configure_hub`.
Every key maps onto a documented traitlet (docs/settings.md), so anything the file
does not cover can still be set in ``jupyterhub_config.py`` after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import SettingsError
from .schema import read_yaml, validate

SETTINGS_ENV = "DAAS_HUB_SETTINGS"


@dataclass(frozen=True)
class Settings:
    file: str
    demo: bool
    facility_name: str
    contact: str
    data_portal_url: str | None
    source_kind: str
    source_path: str | None
    profile_catalogue: str | None
    profiles_enabled: tuple[str, ...] | None
    login_kind: str
    staff_without_proposal: bool
    backend: str
    run_as: str | None
    home_root: str | None
    hub_url: str
    data_dir: str
    #: every backend offered in the form, preferred first; empty: just ``backend``
    backends: tuple[str, ...] = ()
    slurm: dict = field(default_factory=dict)
    #: the spawner.kubernetes section (paths made absolute); checked by daas_hub.kube.parse_kube_site
    kubernetes: dict = field(default_factory=dict)
    quotas: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    login_providers: tuple[dict, ...] = ()
    conditions_version: str | None = None
    conditions_file: str | None = None
    refresh_age: int | None = None
    #: the proposal_source entry, file paths made absolute (see daas_hub.sources.factory)
    source_options: dict = field(default_factory=dict, compare=False, repr=False)


def _path(base: Path, value: str | None) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


#: keys of proposal_source entries that name files (made absolute like other paths)
_SOURCE_PATH_KEYS = ("path", "password_file", "ca_file")


def _source_paths(base: Path, entry: dict) -> dict:
    """A copy of a proposal_source entry with its file paths made absolute."""
    out = {k: (_path(base, v) if k in _SOURCE_PATH_KEYS else v) for k, v in entry.items()}
    if isinstance(entry.get("accounts"), dict):
        out["accounts"] = _source_paths(base, entry["accounts"])
    if isinstance(entry.get("proposals"), list):
        out["proposals"] = [_source_paths(base, e) for e in entry["proposals"]]
    return out


def parse_settings(document, file: str | Path) -> Settings:
    """Build :class:`Settings` from a parsed YAML document; pure but for path joins."""
    if document is None:
        raise SettingsError(file, "", "the settings file is empty", "see docs/settings.md for a complete example")
    validate(document, "site", file)
    base = Path(file).resolve().parent
    facility = document["facility"]
    source = document["proposal_source"]
    profiles = document.get("profiles", {})
    login = document.get("login", {})
    spawner = document.get("spawner", {})
    local = spawner.get("local", {})
    hub = document.get("hub", {})
    demo = bool(document.get("demo", False))
    login_kind = login.get("kind", "demo" if demo else "")
    if login_kind == "demo" and not demo:
        raise SettingsError(
            file, "login > kind", "the demo login lets anyone sign in as a sample user without a password",
            "set 'demo: true' only on a test machine, or choose a real login (docs/login.md)",
        )
    if not login_kind:
        raise SettingsError(
            file, "login > kind", "no login is configured",
            "set login.kind (see docs/settings.md); 'demo' is for demo: true sites only",
        )
    providers = tuple(login.get("providers", ()))
    if login_kind == "oidc" and not providers:
        raise SettingsError(
            file, "login > providers", "the oidc login needs at least one identity provider",
            "list your providers (UmbrellaID, the facility SSO) under login.providers (docs/login.md)",
        )
    if providers and login_kind != "oidc":
        raise SettingsError(
            file, "login > providers", f"providers are listed, but login.kind is {login_kind!r}",
            "set login.kind to oidc, or remove login.providers",
        )
    providers = tuple(
        {**p, "client_secret_file": _path(base, p["client_secret_file"])} if "client_secret_file" in p else dict(p)
        for p in providers
    )
    conditions = login.get("conditions_of_use", {})
    if source["kind"] == "yaml" and not source.get("path"):
        raise SettingsError(
            file, "proposal_source > path", "the yaml proposal source needs the file's path",
            "set proposal_source.path to your proposals file (docs/proposals.md)",
        )
    return Settings(
        source_options=_source_paths(base, source),
        file=str(file),
        demo=demo,
        facility_name=facility["name"],
        contact=facility["contact"],
        data_portal_url=facility.get("data_portal_url"),
        source_kind=source["kind"],
        source_path=_path(base, source.get("path")),
        profile_catalogue=_path(base, profiles.get("catalogue")),
        profiles_enabled=tuple(profiles["enabled"]) if "enabled" in profiles else None,
        login_kind=login_kind,
        staff_without_proposal=login.get("staff_without_proposal", True),
        backend=spawner.get("backend", "local"),
        run_as=local.get("run_as"),
        home_root=_path(base, local.get("home_root")),
        hub_url=hub.get("url", "http://127.0.0.1:8000"),
        data_dir=_path(base, hub.get("data_dir", ".")),
        backends=tuple(spawner.get("backends", ())),
        slurm=_slurm_section(base, spawner.get("slurm", {})),
        kubernetes=_kube_section(base, spawner.get("kubernetes", {}), file),
        quotas=dict(document.get("quotas", {})),
        raw=document,
        login_providers=providers,
        conditions_version=conditions.get("version"),
        conditions_file=_path(base, conditions.get("file")),
        refresh_age=login.get("refresh_age"),
    )


def _slurm_section(base: Path, slurm: dict) -> dict:
    out = dict(slurm)
    for key in ("home_root", "session_bin"):
        if key in out:
            out[key] = _path(base, out[key])
    return out


def _kube_section(base: Path, kube: dict, file) -> dict:
    from .kube import parse_kube_site

    out = dict(kube)
    parse_kube_site(out, str(file))  # the checks a schema cannot make, at start-up
    return out


def load_settings(path: str | Path) -> Settings:
    document = read_yaml(
        path, what="site settings",
        fix_missing=f"create it (docs/settings.md has an example) or point {SETTINGS_ENV} at the right file",
    )
    return parse_settings(document, path)
