"""The real hub refuses to start with bad settings, and says why without a traceback.

Each case writes a small site into a fresh folder and runs the real
``jupyterhub -f jupyterhub_config.py`` on it; the hub must exit with status 2
and a message naming the file, the entry and the fix.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from daas_hub.config import _crypt_key, check_site
from daas_hub.demo import ACCOUNTS, PROPOSALS, site_settings
from daas_hub.errors import SettingsError
from daas_hub.settings import load_settings, parse_settings

from conftest import BIN, REPO, free_port

pytestmark = pytest.mark.hub


def run_hub(site: Path, *, host: str = "127.0.0.1") -> tuple[int, str]:
    """Run the real hub on ``site`` until it exits (it must refuse to start)."""
    env = {k: v for k, v in os.environ.items() if k != "JUPYTERHUB_CRYPT_KEY"}
    env["DAAS_HUB_SETTINGS"] = str(site / "site.yaml")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    r = subprocess.run(
        [str(BIN / "jupyterhub"), "-f", str(REPO / "jupyterhub_config.py"),
         f"--JupyterHub.bind_url=http://{host}:{free_port()}"],
        cwd=site, env=env, capture_output=True, text=True, timeout=60,
    )
    return r.returncode, r.stdout + r.stderr


@pytest.fixture
def site():
    """An empty folder other accounts can traverse, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="daas-hub-badsite-", dir="/var/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def good_site() -> dict:
    """The files of a small site that starts: file name -> YAML document."""
    settings = copy.deepcopy(site_settings("http://127.0.0.1:8000"))
    del settings["spawner"]["local"]["run_as"]
    proposals = {"facility": "DEMO Light Source", "accounts": copy.deepcopy(ACCOUNTS),
                 "proposals": copy.deepcopy(PROPOSALS)}
    return {"site.yaml": settings, "proposals.yaml": proposals}


def write_site(folder: Path, files: dict) -> None:
    """Write each document (a str is written as is; None means no such file)."""
    for name, document in files.items():
        if document is not None:
            text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
            (folder / name).write_text(text)


def _missing_settings(files):
    files["site.yaml"] = None
    return "site.yaml", "", "the site settings file does not exist"


def _unknown_profile(files):
    files["site.yaml"]["profiles"]["enabled"] = ["python", "tomogrpahy"]
    return "site.yaml", "profiles > enabled[1]", 'unknown profile "tomogrpahy"'


def _member_not_an_account(files):
    files["proposals.yaml"]["proposals"][0]["members"][1]["username"] = "mallory"
    return "proposals.yaml", 'proposals[0] "MX-1001" > members[1]', '"mallory" is not one of the accounts'


def _demo_login_not_demo(files):
    files["site.yaml"]["demo"] = False
    return "site.yaml", "login > kind", "the demo login lets anyone sign in as a sample user"


def _missing_catalogue(files):
    files["site.yaml"]["profiles"]["catalogue"] = "profiles.yaml"
    return "profiles.yaml", "", "the profile catalogue file does not exist"


def _settings_not_yaml(files):
    files["site.yaml"] = "facility:\n  name: X\n contact: Y\n"
    return "site.yaml", "line 3, column 2", "this is not valid YAML"


CASES = [_missing_settings, _unknown_profile, _member_not_an_account, _demo_login_not_demo,
         _missing_catalogue, _settings_not_yaml]


@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__.strip("_").replace("_", "-"))
def test_hub_refuses_bad_settings(site, case):
    files = good_site()
    name, entry, problem = case(files)
    write_site(site, files)
    returncode, output = run_hub(site)
    assert returncode == 2, output
    where = f"{site / name}: {entry}: " if entry else f"{site / name}: "
    assert f"daas-hub cannot start: {where}{problem}" in output
    assert "\n  Fix: " in output
    assert "Traceback" not in output
    assert not (site / "hub").exists()  # refused before creating anything


def test_the_site_the_cases_break_is_good(site):
    """Each case above breaks one thing: unbroken, the site passes every start-up check."""
    write_site(site, good_site())
    source, catalogue = check_site(load_settings(site / "site.yaml"))
    assert catalogue.slugs == ["python", "diffraction", "spectroscopy"]
    accounts = {a.username: a for a in source.accounts()}
    assert sorted(accounts) == sorted(a["username"] for a in ACCOUNTS)
    for written in ACCOUNTS:
        account = accounts[written["username"]]
        assert (account.uid, account.gid) == (written["uid"], written["gid"])
        assert account.roles == frozenset(written.get("roles", ["user"]))


# -- the auth_state encryption key


def _settings(tmp_path, *, demo: bool):
    """Settings as parsed from a site file in ``tmp_path``.

    No real login kind exists yet (the schema allows only "demo", which needs
    demo: true), so a real site's Settings are the demo's with demo off.
    """
    settings = parse_settings(site_settings("http://127.0.0.1:8000"), tmp_path / "site.yaml")
    return settings if demo else replace(settings, demo=False)


def test_a_real_site_needs_a_crypt_key(tmp_path, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    settings = _settings(tmp_path, demo=False)
    with pytest.raises(SettingsError) as e:
        _crypt_key(settings)
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'site.yaml'}: (environment): JUPYTERHUB_CRYPT_KEY is not set")
    assert "Fix: generate a key with `openssl rand -hex 32` and set JUPYTERHUB_CRYPT_KEY" in message
    assert not (tmp_path / "hub" / "crypt_key").exists()


def test_a_real_site_with_a_crypt_key(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "ab" * 32)
    assert _crypt_key(_settings(tmp_path, demo=False)) is None  # JupyterHub reads it itself


def test_the_demo_keeps_its_own_crypt_key(tmp_path, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    settings = _settings(tmp_path, demo=True)
    [key] = _crypt_key(settings)
    path = tmp_path / "hub" / "crypt_key"
    assert len(bytes.fromhex(key)) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert _crypt_key(settings) == [key]  # the same key on the next start


def test_demo_hub_refuses_a_non_loopback_address(site):
    """The passwordless demo login never listens beyond loopback unless the admin says so."""
    files = good_site()
    files["site.yaml"]["hub"]["url"] = "http://0.0.0.0:8000"
    write_site(site, files)
    returncode, output = run_hub(site, host="0.0.0.0")
    assert returncode == 2, output
    assert "daas-hub cannot start: the demo login lets anyone sign in without a password" in output
    assert "c.DemoAuthenticator.allow_remote = True" in output
    assert "Traceback" not in output
