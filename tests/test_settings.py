"""The site settings file, and ``daas-hub check`` on it."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from daas_hub import cli
from daas_hub.demo import ensure_demo_site, site_settings
from daas_hub.errors import SettingsError
from daas_hub.settings import SETTINGS_ENV, Settings, load_settings, parse_settings

BIN = Path(sys.executable).parent
URL = "http://127.0.0.1:8000"


def demo_doc():
    return copy.deepcopy(site_settings(URL))


def test_demo_settings_parse(tmp_path):
    base = tmp_path.resolve()
    file = base / "site.yaml"
    settings = parse_settings(demo_doc(), file)
    assert settings == Settings(
        file=str(file),
        demo=True,
        facility_name="DEMO Light Source",
        contact="the DEMO User Office (useroffice@demo.invalid)",
        data_portal_url="https://data.demo.invalid",
        source_kind="yaml",
        source_path=str(base / "proposals.yaml"),
        profile_catalogue=None,
        profiles_enabled=("python", "diffraction", "spectroscopy"),
        login_kind="demo",
        staff_without_proposal=True,
        backend="local",
        run_as="daas-demo",
        home_root=str(base / "homes"),
        hub_url=URL,
        data_dir=str(base / "hub"),
    )
    assert settings.raw == demo_doc()


def test_minimal_demo_settings_take_defaults(tmp_path):
    base = tmp_path.resolve()
    doc = {"demo": True, "facility": {"name": "F", "contact": "C"},
           "proposal_source": {"kind": "yaml", "path": "p.yaml"}}
    settings = parse_settings(doc, base / "site.yaml")
    assert (settings.login_kind, settings.backend, settings.hub_url, settings.data_dir) == (
        "demo", "local", URL, str(base))
    assert (settings.profile_catalogue, settings.profiles_enabled, settings.run_as, settings.home_root,
            settings.data_portal_url) == (None, None, None, None, None)
    assert settings.staff_without_proposal is True


def test_relative_paths_resolve_against_the_files_folder(tmp_path, monkeypatch):
    site = tmp_path.resolve() / "etc" / "daas"
    site.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # not the file's folder
    monkeypatch.setenv("HOME", "/home/admin")
    doc = demo_doc()
    doc["proposal_source"]["path"] = "../shared/proposals.yaml"
    doc["profiles"]["catalogue"] = "~/profiles.yaml"
    doc["spawner"]["local"]["home_root"] = "/srv/homes"
    doc["hub"]["data_dir"] = "state/hub"
    settings = parse_settings(doc, Path("etc/daas/site.yaml"))
    assert settings.source_path == str(tmp_path.resolve() / "etc" / "shared" / "proposals.yaml")
    assert settings.profile_catalogue == "/home/admin/profiles.yaml"
    assert settings.home_root == "/srv/homes"
    assert settings.data_dir == str(site / "state" / "hub")


def _without_demo(d):
    del d["demo"]


def _demo_false(d):
    d["demo"] = False


def _no_login(d):
    del d["demo"]
    del d["login"]


def _unknown_key(d):
    d["spawner"]["local"]["runas"] = "x"


def _top_unknown_key(d):
    d["facilty"] = d.pop("facility")


def _yaml_without_path(d):
    del d["proposal_source"]["path"]


def _no_enabled_profiles(d):
    d["profiles"]["enabled"] = []


def _bad_url(d):
    d["hub"]["url"] = "127.0.0.1:8000"


@pytest.mark.parametrize("mutate, entry, problem, fix", [
    pytest.param(_without_demo, "login > kind", "the demo login lets anyone sign in as a sample user",
                 "set 'demo: true' only on a test machine", id="demo-login-without-demo"),
    pytest.param(_demo_false, "login > kind", "the demo login lets anyone sign in as a sample user",
                 "set 'demo: true' only on a test machine", id="demo-login-with-demo-false"),
    pytest.param(_no_login, "login > kind", "no login is configured", "set login.kind", id="no-login"),
    pytest.param(_unknown_key, "spawner > local", "'runas' was unexpected",
                 "remove or rename the key; the keys allowed here are: home_root, run_as", id="unknown-key"),
    pytest.param(_top_unknown_key, "(top level)", "", "", id="misspelt-section"),
    pytest.param(_yaml_without_path, "proposal_source > path", "the yaml proposal source needs the file's path",
                 "set proposal_source.path", id="yaml-source-without-path"),
    pytest.param(_no_enabled_profiles, "profiles > enabled", "should be non-empty", "", id="no-enabled-profiles"),
    pytest.param(_bad_url, "hub > url", "does not match", "use a value matching", id="url-without-scheme"),
])
def test_refused_settings(tmp_path, mutate, entry, problem, fix):
    doc = demo_doc()
    mutate(doc)
    file = tmp_path / "site.yaml"
    file.write_text(yaml.safe_dump(doc))
    with pytest.raises(SettingsError) as e:
        load_settings(file)
    message = str(e.value)
    assert message.startswith(f"{file}: {entry}: "), message
    assert problem in message
    assert f"\n  Fix: {fix}" in message


def test_missing_settings_file(tmp_path):
    with pytest.raises(SettingsError) as e:
        load_settings(tmp_path / "site.yaml")
    assert str(e.value) == (
        f"{tmp_path / 'site.yaml'}: the site settings file does not exist\n"
        f"  Fix: create it (docs/settings.md has an example) or point {SETTINGS_ENV} at the right file"
    )


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_settings_file(tmp_path, text):
    (tmp_path / "site.yaml").write_text(text)
    with pytest.raises(SettingsError) as e:
        load_settings(tmp_path / "site.yaml")
    assert str(e.value) == (
        f"{tmp_path / 'site.yaml'}: the settings file is empty\n"
        "  Fix: see docs/settings.md for a complete example"
    )


# -- daas-hub check


@pytest.fixture(scope="module")
def demo_site():
    """A generated demo site; under /var/tmp because, as root, its parents must be world-searchable."""
    folder = Path(tempfile.mkdtemp(prefix="daas-hub-check-", dir="/var/tmp"))
    folder.chmod(0o755)
    try:
        yield ensure_demo_site(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_check_ok(demo_site, capsys):
    assert cli.main(["check", str(demo_site)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{demo_site}: OK",
        "  facility:  DEMO Light Source",
        f"  proposals: yaml ({demo_site.parent / 'proposals.yaml'})",
        "  profiles:  python, diffraction, spectroscopy",
        "  login:     demo (demo mode)",
        "  backend:   local",
    ]
    assert err == ""


def test_check_reads_the_environment(demo_site, capsys, monkeypatch):
    monkeypatch.setenv(SETTINGS_ENV, str(demo_site))
    assert cli.main(["check"]) == 0
    assert capsys.readouterr().out.startswith(f"{demo_site}: OK\n")


def test_check_without_a_file(capsys, monkeypatch):
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    assert cli.main(["check"]) == 2
    assert capsys.readouterr().err == f"daas-hub check: name a settings file or set {SETTINGS_ENV}\n"


@pytest.fixture
def bad_site(demo_site):
    doc = yaml.safe_load(demo_site.read_text())
    doc["profiles"]["enabled"] = ["python", "difraction"]
    bad = demo_site.parent / "site-bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    yield bad
    bad.unlink()


def test_check_reports_the_problem(bad_site, capsys):
    assert cli.main(["check", str(bad_site)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f'daas-hub check: {bad_site}: profiles > enabled[1]: unknown profile "difraction"\n')
    assert "  Fix: use one of the profiles in " in err
    assert "python, diffraction, spectroscopy, tomography, crystallography, ptychography" in err


def test_check_command_exits_1_without_traceback(bad_site):
    """The installed console script, as an admin runs it (the OK path is tested in-process)."""
    env = {k: v for k, v in os.environ.items() if k != SETTINGS_ENV}
    r = subprocess.run([str(BIN / "daas-hub"), "check", str(bad_site)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""
    assert f'daas-hub check: {bad_site}: profiles > enabled[1]: unknown profile "difraction"' in r.stderr
    assert "Fix:" in r.stderr
    assert "Traceback" not in r.stderr
