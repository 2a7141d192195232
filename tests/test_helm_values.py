"""helm-values.yaml: the zero-to-jupyterhub chart's own values schema accepts it, merged over
the chart's defaults the way helm merges them, and the daas-hub settings it embeds load
with the hub's own loader and pass its start-up checks.

Real: the chart's values.yaml and values.schema.yaml of chart 4.4.0 (read from the
project's shared folder, never copied into the repository), jsonschema, the hub's
settings loader and configure step. Not run here: helm itself and a cluster (no
registry for the chart is reachable); docs/deploy-kubernetes.md has the commands.
"""

from __future__ import annotations

import ast
import copy
import secrets
from pathlib import Path

import jsonschema
import pytest
import yaml
from traitlets.config import Config

REPO = Path(__file__).resolve().parent.parent
CHART = REPO.parent / "shared" / "z2jh" / "4.4.0"
VALUES = yaml.safe_load((REPO / "helm-values.yaml").read_text())


def helm_merge(base, override):
    """helm's rule for values files: maps merge key by key, a null deletes, anything else replaces."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = helm_merge(out.get(key), value)
    return out


@pytest.fixture(scope="module")
def chart():
    if not (CHART / "values.yaml").is_file():
        pytest.skip(f"not run: the chart's values and schema are not at {CHART} (the project's shared folder)")
    return yaml.safe_load((CHART / "values.yaml").read_text()), yaml.safe_load((CHART / "values.schema.yaml").read_text())


def test_the_values_merged_over_the_charts_defaults_pass_its_schema(chart):
    defaults, schema = chart
    merged = helm_merge(defaults, VALUES)
    # chartpress fills these at release time; the chart's schema wants strings there
    for path in (("hub", "image"), ("singleuser", "image"), ("singleuser", "networkTools", "image")):
        node = merged
        for key in path:
            node = node[key]
        assert node["tag"]
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(merged), key=lambda e: list(e.path))
    assert [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors
            if "set-by-chartpress" not in str(e.instance)] == []


def test_a_misspelt_value_is_caught_by_the_same_check(chart):
    """The check above would see a typo: the chart's schema refuses unknown keys."""
    defaults, schema = chart
    broken = helm_merge(defaults, {"singleuser": {"storage": {"typ": "none"}}})
    assert any("typ" in e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_the_embedded_site_settings_load_and_pass_the_hubs_checks(tmp_path, monkeypatch):
    from daas_hub.config import apply_settings, check_hub_account
    from daas_hub.settings import parse_settings

    doc = copy.deepcopy(VALUES["hub"]["extraFiles"]["daas-site"]["data"])
    assert VALUES["hub"]["extraFiles"]["daas-site"]["mountPath"] == VALUES["hub"]["extraEnv"]["DAAS_HUB_SETTINGS"]
    doc["hub"]["data_dir"] = str(tmp_path / "srv")  # the chart's /srv/jupyterhub volume
    (tmp_path / "secrets").mkdir()  # the daas-hub-site-secrets Secret, mounted at /etc/daas-hub/secrets
    for name in ("umbrella-client", "sso-client", "icat-reader"):
        (tmp_path / "secrets" / name).write_text(f"{name}-value\n")
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", secrets.token_hex(32))  # from the daas-hub-secrets Secret
    settings = parse_settings(doc, tmp_path / "site.yaml")
    c = Config()
    apply_settings(c, settings)
    assert c.JupyterHub.authenticator_class == "daas-multi"
    assert c.JupyterHub.spawner_class == "daas" and list(c.DaasSpawner.backends) == ["kubernetes"]
    assert c.KubeSessionSpawner.namespace == "daas"
    assert c.JupyterHub.cleanup_servers is False  # pods outlive a hub upgrade
    check_hub_account(settings, 1000)  # the chart's hub runs as uid 1000: allowed, sessions are pods


def test_the_hub_runs_the_configure_step_and_holds_no_secret():
    snippet = VALUES["hub"]["extraConfig"]["00-daas-hub"]
    calls = [n.func.id for n in ast.walk(ast.parse(snippet)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert calls == ["configure_hub"]
    crypt = VALUES["hub"]["extraEnv"]["JUPYTERHUB_CRYPT_KEY"]
    assert crypt["valueFrom"]["secretKeyRef"]["name"] == "daas-hub-secrets"

    def literals(node, path=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from literals(v, (*path, str(k)))
        elif isinstance(node, str):
            yield path, node

    suspicious = [p for p, v in literals(VALUES)
                  if any(w in p[-1].lower() for w in ("secret", "password", "token", "key"))
                  and not p[-1].endswith(("_file", "Name", "name")) and p[-1] not in ("key",)]
    assert suspicious == []


def test_every_session_image_is_pre_pulled_and_every_profile_has_one():
    from daas_hub.kube import check_images, parse_kube_site
    from daas_hub.profiles import load_catalogue

    site = VALUES["hub"]["extraFiles"]["daas-site"]["data"]
    images = site["spawner"]["kubernetes"]["images"]
    pulled = {f"{i['name']}:{i['tag']}" for i in VALUES["prePuller"]["extraImages"].values()}
    assert set(images.values()) <= pulled
    enabled = load_catalogue().select(site["profiles"]["enabled"], entry="profiles > enabled",
                                      settings_file="helm-values.yaml")
    check_images(parse_kube_site(site["spawner"]["kubernetes"], "helm-values.yaml"), enabled.profiles)
    assert set(site["profiles"]["enabled"]) <= set(images)
