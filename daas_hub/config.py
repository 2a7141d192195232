"""Wire a JupyterHub from the site settings file.

``jupyterhub_config.py`` calls :func:`configure_hub`; everything it sets is an
ordinary traitlet, so the admin can override any of it after the call.
"""

from __future__ import annotations

import getpass
import os
import secrets
import sys
from importlib import resources
from pathlib import Path

from .errors import SettingsError
from .kube import check_images, parse_kube_site
from .operations import apply_operations
from .profiles import load_catalogue
from .settings import SETTINGS_ENV, Settings, load_settings
from .sources.factory import source_config

#: hub paths ending in "/" (daas_hub.spawners.slash_page.PATTERN; kept here so the core imports no jupyterhub)
SLASH_PATTERN = r"/((?!api/)[^?]*?[^/?])/+"
DEMO_DIR_ENV = "DAAS_HUB_DEMO_DIR"
#: courses (docs/instructors.md) and sharing with the team (docs/teams.md)
COURSE_AND_TEAM_HANDLERS = [
    (r"/courses", "daas_hub.spawners.course_pages.CoursesPage"),
    (r"/courses/([a-z][a-z0-9]{1,15})", "daas_hub.spawners.course_pages.CoursePage"),
    (r"/course-login", "daas_hub.spawners.course_pages.CourseSignIn"),
    (r"/api/daas/courses/cleanup", "daas_hub.spawners.course_pages.CourseCleanupAPI"),
    (r"/share", "daas_hub.spawners.teams.SharePage"),
    (r"/api/daas/shares/([^/]+)/?([^/]*)", "daas_hub.spawners.teams.ShareAPI"),
]
DEFAULT_DEMO_DIR = "/var/lib/daas-hub/demo"


def templates_dir() -> str:
    return str(resources.files("daas_hub").joinpath("templates"))


def _crypt_key(settings: Settings) -> list[str] | None:
    """The auth_state encryption key: from the environment, or the demo's own file."""
    if os.environ.get("JUPYTERHUB_CRYPT_KEY"):
        return None  # JupyterHub reads it itself
    if not settings.demo:
        raise SettingsError(
            settings.file, "(environment)", "JUPYTERHUB_CRYPT_KEY is not set, and daas-hub keeps "
            "each user's account and proposals encrypted in auth_state",
            "generate a key with `openssl rand -hex 32` and set JUPYTERHUB_CRYPT_KEY in the hub's "
            "environment (docs/settings.md#encryption)",
        )
    path = Path(settings.data_dir) / "crypt_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return [path.read_text().strip()]


def _source_entry(settings: Settings) -> dict:
    """The settings' proposal_source entry (built from the old fields if absent)."""
    if settings.source_options:
        return settings.source_options
    return {"kind": settings.source_kind, "path": settings.source_path or ""}


def check_site(settings: Settings):
    """Load everything the settings point at; raise SettingsError on the first problem."""
    source_class, source_cfg = source_config(_source_entry(settings))
    source = source_class(config=source_cfg)
    source.check()
    catalogue = load_catalogue(settings.profile_catalogue)
    if settings.profiles_enabled is not None:
        catalogue = catalogue.select(
            list(settings.profiles_enabled), entry="profiles > enabled", settings_file=settings.file
        )
    if settings.kubernetes:
        check_images(parse_kube_site(settings.kubernetes, settings.file), catalogue.profiles)
    return source, catalogue


def _demo_users(source) -> list[dict]:
    users = []
    accounts = getattr(getattr(source, "source", source), "accounts", None)  # the YAML source lists them
    for account in accounts() if accounts else []:
        users.append({"name": account.username, "display_name": account.display_name,
                      "roles": sorted(account.roles)})
    return users


def no_settings_error() -> SettingsError:
    """Why a hub without a settings file does not start (it never falls back to the demo)."""
    return SettingsError(
        f"${SETTINGS_ENV}", "(environment)", f"{SETTINGS_ENV} is not set, so the hub has no site settings",
        f"set {SETTINGS_ENV} to your site settings file in the hub's environment (docs/settings.md); "
        f"to try the demo on this machine, run `daas-hub demo` instead",
    )


def check_hub_account(settings: Settings, euid: int) -> None:
    """Refuse a hub without root outside the demo: sessions would run as the hub's own account.

    A Kubernetes-only site is the exception (the chart's hub runs as uid 1000): its
    sessions are pods, never processes on the hub's machine.

    Such sessions could read the hub's cookie secret, its database and the crypt key in
    ``/proc/<hub>/environ``. The demo accepts it (its sessions share one account anyway).
    """
    if euid == 0 or settings.demo:
        return
    if set(settings.backends or (settings.backend,)) <= {"kubernetes"}:
        return  # sessions run in pods as each person's account, never on the hub's machine
    raise SettingsError(
        settings.file, "(the hub's account)",
        f"the hub runs as {getpass.getuser()}, not root, so it cannot start sessions as other "
        f"accounts: every session would run as the hub's own account and could read the hub's "
        f"cookie secret, database and encryption key",
        "run the hub as root (sessions then run as each person's unprivileged account); "
        "see docs/security.md",
    )


def _session_account(run_as: str | None) -> str | None:
    if run_as and os.geteuid() != 0:
        # without root the hub cannot switch accounts: sessions run as the hub's user
        return getpass.getuser()
    return run_as


def _apply_slurm(c, slurm: dict) -> None:
    """The site file's ``spawner.slurm`` section onto ``c.SlurmSpawner`` (docs/backend-slurm.md)."""
    for key in ("partition", "account", "qos", "home_root", "session_bin", "slurm_conf", "proposal_accounts"):
        if key in slurm:
            setattr(c.SlurmSpawner, key, slurm[key])
    run_as = _session_account(slurm.get("run_as"))
    if run_as:
        c.SlurmSpawner.run_as = run_as


#: the operations pages (daas_hub.spawners.ops_pages, docs/operations.md)
OPERATIONS_HANDLERS = [
    (r"/daas/notices.js", "daas_hub.spawners.ops_pages.NoticesScriptHandler"),
    (r"/daas/extend", "daas_hub.spawners.ops_pages.ExtendHandler"),
    (r"/daas/admin/announcements", "daas_hub.spawners.ops_pages.AnnouncementsHandler"),
    (r"/daas/admin/usage", "daas_hub.spawners.ops_pages.UsageHandler"),
    (r"/daas/admin/status", "daas_hub.spawners.ops_pages.StatusHandler"),
]


def hub_handlers(backends) -> list[tuple[str, str]]:
    """The hub pages daas-hub adds (JupyterHub's ``extra_handlers``; 3.1+ logs it as deprecated).

    The quota page and the trailing-slash redirects always; with the Slurm backend, the handler a session reports its
    port to, in place of batchspawner's (which sets any attribute a session posts;
    the Slurm backend withdraws that one when imported, see
    ``daas_hub.spawners.slurm._withdraw_batchspawner_handler``).
    """
    handlers = [(r"/quota", "daas_hub.spawners.quota_page.QuotaHandler"), *COURSE_AND_TEAM_HANDLERS]
    handlers += OPERATIONS_HANDLERS
    if "slurm" in backends:
        handlers.append((r"/api/batchspawner", "daas_hub.spawners.slurm.SessionPortHandler"))
    # every hub page with a trailing slash (/hub/login/ -> /hub/login), registered last
    handlers.append((SLASH_PATTERN, "daas_hub.spawners.slash_page.TrailingSlashHandler"))
    return handlers


#: spawner.kubernetes keys -> KubeSessionSpawner traits (docs/backend-kubernetes.md)
KUBE_TRAITS = {
    "namespace": "namespace", "images": "session_images", "image_pull_policy": "image_pull_policy",
    "command": "session_command", "home_path": "home_path", "data_root": "data_root",
    "guarantee_fraction": "guarantee_fraction", "storage": "storage", "gpu": "gpu",
    "network_policy": "network_policy",
}


def _apply_kubernetes(c, kube: dict) -> None:
    """The site file's ``spawner.kubernetes`` section onto ``c.KubeSessionSpawner``."""
    for key, trait in KUBE_TRAITS.items():
        if key in kube:
            setattr(c.KubeSessionSpawner, trait, kube[key])


def apply_settings(c, settings: Settings) -> None:
    """Set the traitlets for ``settings`` on the config object ``c``."""
    source, catalogue = check_site(settings)

    c.JupyterHub.bind_url = settings.hub_url
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.template_paths = [templates_dir()]

    keys = _crypt_key(settings)
    if keys:
        c.CryptKeeper.keys = keys

    # login
    if settings.login_kind == "oidc":
        configure_oidc(c, settings)
    else:
        c.JupyterHub.authenticator_class = "daas-demo"
    source_class, source_cfg = source_config(_source_entry(settings))
    c.merge(source_cfg)
    c.ProposalMapping.source_class = source_class
    c.ProposalMapping.facility_name = settings.facility_name
    c.ProposalMapping.contact = settings.contact
    c.ProposalMapping.staff_without_proposal = settings.staff_without_proposal

    # sessions: one form, checked options, a child spawner per backend (docs/spawner.md)
    c.JupyterHub.spawner_class = "daas"
    c.JupyterHub.allow_named_servers = True  # one session per proposal and profile, within quota
    c.DaasSpawner.backends = list(settings.backends or (settings.backend,))
    if settings.backend in c.DaasSpawner.backends:  # the default backend first
        c.DaasSpawner.backends = [settings.backend, *[b for b in c.DaasSpawner.backends if b != settings.backend]]
    c.JupyterHub.extra_handlers = hub_handlers(c.DaasSpawner.backends)
    c.CourseBook.courses_dir = str(data_dir / "courses")
    if settings.demo:  # the demo's sample course takes its material from the demo folder
        c.CourseBook.material_prefixes = [f"file://{Path(settings.file).resolve().parent}/material/"]
    # sessions on batch and cluster backends outlive a hub restart or upgrade: the restarted
    # hub finds them again (docs/backend-slurm.md). Local sessions are the hub's children.
    c.JupyterHub.cleanup_servers = set(c.DaasSpawner.backends) <= {"local"}
    # a class starting at once waits in the spawner's start queue (start_slots), never fails
    # for waiting: no JupyterHub limit on pending starts (its default refuses the 101st)
    c.JupyterHub.concurrent_spawn_limit = 0
    if settings.profile_catalogue:
        c.DaasSpawner.profile_catalogue = settings.profile_catalogue
    if settings.profiles_enabled is not None:
        c.DaasSpawner.profiles_enabled = list(settings.profiles_enabled)
    if settings.quotas.get("roles"):
        c.DaasSpawner.role_quotas = settings.quotas["roles"]
    if settings.quotas.get("proposals"):
        c.DaasSpawner.proposal_quotas = settings.quotas["proposals"]
    if settings.data_portal_url:
        c.LocalSpawner.data_portal_url = settings.data_portal_url
        c.SlurmSpawner.data_portal_url = settings.data_portal_url
        c.KubeSessionSpawner.data_portal_url = settings.data_portal_url
    run_as = _session_account(settings.run_as)
    if run_as:
        c.LocalSpawner.run_as = run_as
    if settings.home_root:
        c.LocalSpawner.home_root = settings.home_root
    _apply_slurm(c, settings.slurm)
    _apply_kubernetes(c, settings.kubernetes)

    template_vars = {
        "daas_facility": settings.facility_name,
        "daas_contact": settings.contact,
        "daas_profiles": [p.name for p in catalogue.profiles],
    }
    if settings.demo and settings.login_kind == "demo":
        template_vars["daas_demo_users"] = _demo_users(source)
        note = (
            f"Demo mode: sample users sign in without a password. Every session runs as the "
            f"local account <code>{run_as}</code>, with its own home under {settings.home_root}."
            if run_as else "Demo mode: sample users sign in without a password."
        )
        template_vars["announcement"] = note
    c.JupyterHub.template_vars = template_vars
    # lifetimes, culling, announcements, usage records, logs (docs/operations.md)
    apply_operations(c, settings.raw.get("operations", {}), data_dir)


def _read_secret(settings: Settings, i: int, path: str) -> str:
    entry = f"login > providers[{i}] > client_secret_file"
    try:
        secret = Path(path).read_text().strip()
    except OSError as e:
        raise SettingsError(settings.file, entry, f"cannot read {path} ({e.strerror})",
                            "write the client secret the provider gave you into that file (mode 0600)") from None
    if not secret:
        raise SettingsError(settings.file, entry, f"{path} is empty", "write the provider's client secret into it")
    return secret


def configure_oidc(c, settings: Settings) -> None:
    """OpenID Connect login: one button per provider (docs/login.md)."""
    c.JupyterHub.authenticator_class = "daas-multi"
    providers = []
    for i, p in enumerate(settings.login_providers):
        entry = {"name": p["name"], "label": p["label"], "issuer": p["issuer"],
                 "client_id": p["client_id"], "link_by": p["link_by"]}
        if p.get("client_secret_file"):
            entry["client_secret"] = _read_secret(settings, i, p["client_secret_file"])
        for key, trait in (("username_claim", "username_claim"), ("scopes", "scope"),
                           ("groups_claim", "groups_claim"), ("role_claims", "role_claims"),
                           ("role_groups", "role_groups"), ("callback_url", "oauth_callback_url")):
            if key in p:
                entry[trait] = p[key]
        providers.append(entry)
    c.MultiAuthenticator.providers = providers
    if settings.refresh_age is not None:
        c.MultiAuthenticator.auth_refresh_age = settings.refresh_age
        c.OIDCAuthenticator.auth_refresh_age = settings.refresh_age
    if settings.conditions_version:
        if not Path(settings.conditions_file).is_file():
            raise SettingsError(settings.file, "login > conditions_of_use > file",
                                f"{settings.conditions_file} does not exist",
                                "write the conditions of use there, or correct the path")
        c.ConditionsOfUse.version = settings.conditions_version
        c.ConditionsOfUse.text_file = settings.conditions_file


def configure_hub(c, settings_path: str | None = None, *, exit_on_error: bool = True) -> Settings | None:
    """Configure the hub from ``settings_path`` (or ``$DAAS_HUB_SETTINGS``).

    With neither, the hub refuses to start: the passwordless demo runs only when
    asked for (``daas-hub demo``, or a settings file with ``demo: true``). A
    settings problem stops the hub with a message naming the file, the entry and
    the fix.
    """
    try:
        path = settings_path or os.environ.get(SETTINGS_ENV)
        if not path:
            raise no_settings_error()
        settings = load_settings(path)
        check_hub_account(settings, os.geteuid())
        apply_settings(c, settings)
        return settings
    except SettingsError as e:
        if not exit_on_error:
            raise
        print(f"daas-hub cannot start: {e}", file=sys.stderr)
        raise SystemExit(2) from None
