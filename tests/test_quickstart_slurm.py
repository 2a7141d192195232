"""docs/quickstart-slurm.md, followed where it can be without a cluster: its site
settings load with the hub's own loader and set what the page says they set.

Sessions on a real one-node Slurm with these shipped settings (restart included) are
in tests/test_slurm_hub.py.
"""

from __future__ import annotations

import re
import secrets
import shutil
import textwrap
from pathlib import Path

import yaml
from traitlets.config import Config

from daas_hub.config import apply_settings
from daas_hub.settings import parse_settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "quickstart-slurm.md"


def blocks(language: str) -> list[str]:
    """The page's code blocks in ``language``, as written (indented under list items)."""
    text = DOC.read_text()
    return [textwrap.dedent(b) for b in re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)]


def test_the_pages_settings_load_and_keep_sessions_across_restarts(tmp_path, demo_site, monkeypatch):
    [site_yaml] = blocks("yaml")
    doc = yaml.safe_load(site_yaml)
    shutil.copy(demo_site / "proposals.yaml", tmp_path / "proposals.yaml")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/sso-client").write_text("from-the-provider\n")
    doc["hub"]["data_dir"] = str(tmp_path / "hub")  # the page's /var/lib/daas-hub/site
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", secrets.token_hex(32))  # step 7: as in the general quick start
    c = Config()
    apply_settings(c, parse_settings(doc, tmp_path / "site.yaml"))
    assert c.JupyterHub.authenticator_class == "daas-multi"
    assert c.JupyterHub.spawner_class == "daas"
    assert list(c.DaasSpawner.backends) == ["slurm", "local"]
    assert c.JupyterHub.cleanup_servers is False  # "sessions keep running while the hub is down"
    assert c.SlurmSpawner.partition == "interactive" and c.SlurmSpawner.account == "daas"
    assert c.SlurmSpawner.proposal_accounts == {"MX-2471": {"account": "mx2471", "qos": "beamtime"}}
    assert c.SlurmSpawner.home_root == "/gpfs/daas/homes"
    assert c.DaasSpawner.role_quotas["user"]["sessions"] == 2

    [overrides] = blocks("python")
    exec(compile(overrides, str(DOC), "exec"), {"c": c})  # the page's jupyterhub_config.py lines
    assert c.JupyterHub.hub_bind_url == "http://0.0.0.0:8081"
    assert c.JupyterHub.hub_connect_url.endswith(":8081")


def test_the_pages_log_name_is_the_backends_default():
    from daas_hub.spawners.slurm import SlurmSpawner

    assert "~/.daas-hub-slurm-<job id>.log" in DOC.read_text()
    assert SlurmSpawner().output_template == "{home}/.daas-hub-slurm-%j.log"
