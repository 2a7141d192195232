"""The integration doctor, ``daas-hub check --live``: try each integration for real.

Every check is a function returning one :class:`Check`: a name, whether it passed,
and a sentence saying what is wrong and how to fix it. :func:`run_checks` runs
those the site uses, each bounded by a timeout; one failing never stops the others.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import SettingsError, SourceUnavailable
from .model import Identity, Provider, UnsafeValue
from .safety import home_root_problem
from .settings import Settings

#: the guacd address to try (the VM gateway's guacd_address, docs/desktops.md)
GUACD_ENV = "DAAS_HUB_GUACD"

TIMEOUT = 10  # seconds, per outbound call
#: the VM gateway's health URL, checked when set
GATEWAY_ENV = "DAAS_VM_GATEWAY_URL"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found; on failure: what is wrong and how to fix it

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name:<22} {self.detail}"


def _get_json(url: str) -> dict:
    ctx = ssl.create_default_context()  # honours SSL_CERT_FILE for a facility CA
    with urllib.request.urlopen(url, timeout=TIMEOUT, context=ctx if url.startswith("https") else None) as r:
        return json.loads(r.read().decode())


def check_idp(provider: dict) -> Check:
    """The provider's discovery document and its JWKS (keys the hub verifies ID tokens with)."""
    name = f"idp {provider.get('name', '?')}"
    issuer = provider["issuer"].rstrip("/")
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        doc = _get_json(url)
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return Check(name, False, f"no discovery document at {url} ({reason}); check login > providers > issuer "
                                  f"and that the hub can reach the provider (firewall, proxy, CA)")
    if doc.get("issuer", "").rstrip("/") != issuer:
        return Check(name, False, f"the provider calls itself {doc.get('issuer')!r}, not {issuer!r}; "
                                  f"copy its issuer exactly into login > providers > issuer")
    jwks = doc.get("jwks_uri")
    try:
        keys = _get_json(jwks).get("keys") if jwks else None
    except (OSError, ValueError) as e:
        return Check(name, False, f"its JWKS {jwks} does not answer ({getattr(e, 'reason', None) or e}); "
                                  f"ask the provider's operators")
    if not keys:
        return Check(name, False, f"its JWKS {jwks} lists no keys; ask the provider's operators")
    return Check(name, True, f"{issuer}: discovery and JWKS ({len(keys)} key(s))")


def check_catalogue(settings: Settings) -> Check:
    """Sign in to the proposal catalogue and ask one question (an account that does not exist)."""
    from .config import _source_entry
    from .sources.factory import build_source

    entry = dict(_source_entry(settings))
    kind = entry.get("kind", "?")
    if kind in ("yaml", "chain", "sql", "icat", "scicat"):
        entry["cache"] = {**entry.get("cache", {}), "enabled": False}
    probe = Identity(provider=Provider.FACILITY, subject="daas-doctor-probe", username="daas-doctor-probe")

    async def ask():
        source = build_source(entry)
        try:
            source.check()
            return await asyncio.wait_for(source.resolve_account(probe), TIMEOUT)
        finally:
            await source.close()

    try:
        asyncio.run(ask())
    except SettingsError as e:
        return Check("catalogue", False, str(e))
    except (SourceUnavailable, TimeoutError) as e:
        return Check("catalogue", False, f"the {kind} catalogue did not answer a test query ({e or 'timeout'}); "
                                         f"check its address, account and password (proposal_source)")
    except UnsafeValue as e:
        return Check("catalogue", True, f"{kind}: answered (with an unsafe value: {e})")
    return Check("catalogue", True, f"{kind}: signed in and answered a test query")


def _slurm_env(slurm: dict) -> dict:
    env = dict(os.environ)
    if slurm.get("slurm_conf"):
        env["SLURM_CONF"] = slurm["slurm_conf"]
    return env


def _run(cmd: list[str], env: dict) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        return 127, f"{cmd[0]} is not installed on the hub's machine"
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]} gave no answer within {TIMEOUT} s"
    text = (p.stderr.strip() or p.stdout.strip()).splitlines()
    return p.returncode, (text[-1] if text else "")


def check_slurm(settings: Settings) -> list[Check]:
    slurm = settings.slurm
    env = _slurm_env(slurm)
    code, out = _run(["sinfo", "-h", "-o", "%R %a"], env)
    if code != 0:
        return [Check("slurm sinfo", False, f"sinfo failed: {out}; is slurmctld running and "
                                            f"spawner.slurm.slurm_conf right?")]
    checks = [Check("slurm sinfo", True, f"partitions: {' '.join(out.split()) if out else '(none)'}")]
    cmd = ["sbatch", "--test-only", "--wrap=true", "--time=1"]
    for key, flag in (("partition", "--partition"), ("account", "--account"), ("qos", "--qos")):
        if slurm.get(key):
            cmd.append(f"{flag}={slurm[key]}")
    code, out = _run(cmd, env)
    if code != 0:
        checks.append(Check("slurm sbatch", False, f"sbatch --test-only refused a job: {out}; check "
                                                   f"spawner.slurm partition, account and qos"))
    else:
        checks.append(Check("slurm sbatch", True, out or "a test job would be accepted"))
    return checks


def check_kubernetes(settings: Settings) -> Check:
    kube = settings.raw.get("spawner", {}).get("kubernetes", {})
    namespace = kube.get("namespace", "default")
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return Check("kubernetes", False, "kubectl is not installed on the hub's machine; install it to check "
                                          "the API and the namespace's permissions")
    env = dict(os.environ)
    code, out = _run([kubectl, "auth", "can-i", "create", "pods", "-n", namespace], env)
    if code != 0 or out.strip() != "yes":
        return Check("kubernetes", False, f"the hub may not create pods in namespace {namespace} ({out}); "
                                          f"grant its service account the daas-hub role")
    return Check("kubernetes", True, f"may create pods in {namespace}")


def _mode(st) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def check_storage(settings: Settings) -> list[Check]:
    """The hub's data folder, the homes' roots, the proposal data root: present, owners and modes."""
    checks = []
    data = Path(settings.data_dir)
    try:
        st = data.stat()
        ok = os.access(data, os.W_OK)
        checks.append(Check("storage data_dir", ok, f"{data} owner uid {st.st_uid} mode {_mode(st)}" if ok else
                            f"{data} is not writable by the hub; `chown` it to the hub's account"))
    except OSError as e:
        checks.append(Check("storage data_dir", False, f"{data} cannot be used ({e.strerror}); create it "
                                                       f"(hub.data_dir), owned by the hub's account, mode 0700"))
    roots = [("storage home_root", settings.home_root), ("storage slurm home", settings.slurm.get("home_root"))]
    for name, path in roots:
        if not path:
            continue
        problem = home_root_problem(path, hub_uid=os.geteuid())
        if problem:
            checks.append(Check(name, False, problem))
        else:
            st = os.stat(path)
            checks.append(Check(name, True, f"{path} owner uid {st.st_uid} mode {_mode(st)}"))
    return checks


def check_crypt_key(settings: Settings) -> Check:
    key = os.environ.get("JUPYTERHUB_CRYPT_KEY", "")
    if not key:
        if settings.demo and (Path(settings.data_dir) / "crypt_key").exists():
            return Check("crypt key", True, "the demo's own key file")
        return Check("crypt key", False, "JUPYTERHUB_CRYPT_KEY is not set in this environment; set it as in the "
                                         "hub's (`openssl rand -hex 32`, docs/settings.md#encryption)")
    for part in key.replace(",", ";").split(";"):
        part = part.strip()
        try:
            raw = bytes.fromhex(part) if len(part) == 64 else base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != 32:
            return Check("crypt key", False, "JUPYTERHUB_CRYPT_KEY is not 32 bytes in hex or base64; "
                                             "generate one with `openssl rand -hex 32`")
    return Check("crypt key", True, "JUPYTERHUB_CRYPT_KEY is set (32 bytes)")


def check_tcp(name: str, host: str, port: int, fix: str) -> Check:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT):
            pass
    except OSError as e:
        return Check(name, False, f"nothing answers on {host}:{port} ({e.strerror or e}); {fix}")
    return Check(name, True, f"{host}:{port} accepts connections")


def check_guacd(address: str) -> Check:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return Check("guacd", False, f"{GUACD_ENV}={address!r} is not host:port")
    return check_tcp("guacd", host.strip("[]"), int(port), "start guacd (systemctl start guacd) or correct "
                                                            f"{GUACD_ENV}")


def check_url(name: str, url: str, fix: str) -> Check:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            return Check(name, True, f"{url} answers ({r.status})")
    except urllib.error.HTTPError as e:
        return Check(name, e.code < 500, f"{url} answers {e.code}" + ("" if e.code < 500 else f"; {fix}"))
    except OSError as e:
        return Check(name, False, f"{url} does not answer ({getattr(e, 'reason', None) or e}); {fix}")


def run_checks(settings: Settings, env: dict | None = None) -> list[Check]:
    """Every check the site's settings call for, in a fixed order."""
    env = os.environ if env is None else env
    checks = [check_crypt_key(settings)]
    for p in settings.login_providers:
        checks.append(check_idp(p))
    checks.append(check_catalogue(settings))
    backends = set(settings.backends or (settings.backend,))
    if "slurm" in backends:
        checks += check_slurm(settings)
    if "kubernetes" in backends:
        checks.append(check_kubernetes(settings))
    checks += check_storage(settings)
    if env.get(GUACD_ENV):
        checks.append(check_guacd(env[GUACD_ENV]))
    gateway = env.get(GATEWAY_ENV)
    if gateway:
        checks.append(check_url("vm gateway", gateway, "start the VM gateway or correct its URL"))
    return checks
