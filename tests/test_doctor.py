"""``daas-hub check --live`` against real integrations, each broken in turn.

A real OpenID provider (npm oidc-provider), a real PostgreSQL user office
database, a real Slurm cluster, real folders, and guacd when it is installed.
Each break must fail exactly its own line; the others keep passing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from postgres_server import PostgresServer, pg_bindir
from test_login_oidc import Provider, node_modules
from test_sources_sql import ACCOUNT_QUERY, PROPOSALS_QUERY, SCHEMA, TABLES

import slurm_cluster
from conftest import BIN, REPO, make_world_dir, wait_until

pytestmark = pytest.mark.hub

ACCOUNTS = {"alice": {"sub": "u-1", "claims": {"email": "alice@demo.invalid", "email_verified": True}}}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture(scope="module")
def good_site():
    why = slurm_cluster.available()
    if why:
        pytest.skip(f"no Slurm cluster here: {why}")
    if pg_bindir() is None:
        pytest.skip("PostgreSQL is not installed (requirements/apt-test.txt)")
    folder = make_world_dir("daas-doctor-")
    workdir = Path(tempfile.mkdtemp(prefix="daas-doctor-oidc-"))
    (workdir / "node_modules").symlink_to(node_modules())
    shutil.copy(REPO / "tests/oidc/provider.mjs", workdir / "provider.mjs")
    pg = cluster = provider = None
    try:
        provider = Provider("umbrella", ACCOUNTS, "http://127.0.0.1:9", workdir)
        pg = PostgresServer(pg_bindir()).start()
        pg.psql(SCHEMA)
        pg.psql(TABLES, database="useroffice")
        cluster = slurm_cluster.start_cluster(folder / "slurm")
        (folder / "db-password").write_text("reader-secret\n")
        (folder / "homes").mkdir(mode=0o755)
        (folder / "umbrella.secret").write_text(provider.secret)
        doc = {
            "facility": {"name": "DEMO", "contact": "the DEMO User Office"},
            "proposal_source": {"kind": "sql", "url": pg.url("daas_reader", "useroffice"),
                                "password_file": "db-password", "facility": "ESRF",
                                "account_query": ACCOUNT_QUERY, "proposals_query": PROPOSALS_QUERY},
            "login": {"kind": "oidc", "providers": [
                {"name": "umbrella", "label": "UmbrellaID", "issuer": provider.issuer, "client_id": "daas-hub-umbrella",
                 "client_secret_file": "umbrella.secret", "link_by": "umbrella_id"}]},
            "spawner": {"backend": "slurm", "backends": ["slurm"],
                        "slurm": {"slurm_conf": str(cluster.conf), "partition": "debug", "home_root": "homes"}},
            "hub": {"data_dir": "hub"},
        }
        (folder / "hub").mkdir(mode=0o700)
        (folder / "site.yaml").write_text(yaml.safe_dump(doc))
        yield {"folder": folder, "provider": provider, "pg": pg, "cluster": cluster}
    finally:
        for part in (cluster, pg):
            if part is not None:
                part.stop()
        if provider is not None:
            from conftest import stop_process
            stop_process(provider.proc)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def doctor(site, env=None) -> tuple[int, dict]:
    environ = {**os.environ, "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)}
    environ.pop("DAAS_HUB_GUACD", None)
    environ.update(env or {})
    p = subprocess.run([str(BIN / "daas-hub"), "check", "--live", str(site["folder"] / "site.yaml")],
                       capture_output=True, text=True, timeout=180, env=environ)
    lines = {}
    for line in p.stdout.splitlines():
        m = re.match(r"(PASS|FAIL)  (.{22}) (.*)", line)
        if m:
            lines[m.group(2).strip()] = (m.group(1), m.group(3))
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    assert lines, f"no check lines:\n{p.stdout}\n{p.stderr}"
    return p.returncode, lines


GOOD = ["crypt key", "idp umbrella", "catalogue", "slurm sinfo", "slurm sbatch", "storage data_dir",
        "storage slurm home"]


def failing(lines) -> list[str]:
    return [name for name, (verdict, _) in lines.items() if verdict == "FAIL"]


def test_good_site_passes_every_check(good_site):
    code, lines = doctor(good_site)
    assert list(lines) == GOOD and failing(lines) == [], lines
    assert code == 0


def test_idp_down_fails_its_line(good_site):
    provider = good_site["provider"]
    with provider.down():
        code, lines = doctor(good_site)
    assert code == 1 and failing(lines) == ["idp umbrella"], lines
    assert "no discovery document at" in lines["idp umbrella"][1]


def test_wrong_catalogue_password_fails_its_line(good_site):
    pw = good_site["folder"] / "db-password"
    pw.write_text("not-the-password\n")
    try:
        code, lines = doctor(good_site)
    finally:
        pw.write_text("reader-secret\n")
    assert code == 1 and failing(lines) == ["catalogue"], lines
    assert "did not answer a test query" in lines["catalogue"][1]


def test_slurm_controller_down_fails_its_line(good_site):
    cluster = good_site["cluster"]
    cluster.stop_controller()
    try:
        code, lines = doctor(good_site)
    finally:
        cluster.start_controller()
        # the next test needs the node back: bounded wait for it to answer the new controller
        wait_until(lambda: cluster.run("sinfo", "-h", "-n", cluster.node, "-o", "%T", check=False).stdout.strip()
                   in ("idle", "mixed", "allocated"), timeout=90, interval=1, what="the Slurm node back")
    assert code == 1 and failing(lines) == ["slurm sinfo"], lines
    assert "sinfo failed" in lines["slurm sinfo"][1]


def test_missing_storage_path_fails_its_line(good_site):
    homes = good_site["folder"] / "homes"
    homes.rename(homes.with_name("homes-away"))
    try:
        code, lines = doctor(good_site)
    finally:
        homes.with_name("homes-away").rename(homes)
    assert code == 1 and failing(lines) == ["storage slurm home"], lines
    assert "cannot be used" in lines["storage slurm home"][1]


def test_guacd_up_passes_and_down_fails_its_line(good_site, tmp_path):
    """The real guacd (built by `make guacd` from ../shared/vendor) answers: the line passes;
    stopped, the same address fails its line and nothing else does."""
    from vm_targets import GUACD_DIR, Servers

    if not (GUACD_DIR / "sbin/guacd").exists():
        pytest.skip(f"guacd is not built at {GUACD_DIR} (`make guacd`, part of `make test`)")
    servers = Servers(tmp_path)
    port = closed_port()
    guacd = servers.start("guacd", ["env", f"LD_LIBRARY_PATH={GUACD_DIR}/lib", str(GUACD_DIR / "sbin/guacd"),
                                    "-b", "127.0.0.1", "-l", str(port), "-f"])
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
                   timeout=30, what="guacd listening")
        code, lines = doctor(good_site, env={"DAAS_HUB_GUACD": f"127.0.0.1:{port}"})
        assert "guacd" in lines and "guacd" not in failing(lines), lines
    finally:
        servers.stop()
    assert guacd.poll() is not None
    code, lines = doctor(good_site, env={"DAAS_HUB_GUACD": f"127.0.0.1:{port}"})
    assert code == 1 and failing(lines) == ["guacd"], lines
    assert "nothing answers on" in lines["guacd"][1]
