"""End to end: a real JupyterHub whose site settings read proposals from a real
PostgreSQL user office database (kind: sql, with the cache), signing people in
through the demo login; then the database goes down.
"""

from __future__ import annotations

import re
import shutil

import pytest
import yaml
from postgres_server import PostgresServer, pg_bindir
from test_sources_sql import ACCOUNT_QUERY, PROPOSALS_QUERY, SCHEMA, TABLES

from conftest import make_world_dir, start_hub, stop_process

pytestmark = pytest.mark.hub


@pytest.fixture
def sql_site(demo_site):
    server = PostgresServer(pg_bindir()).start()
    folder = make_world_dir("daas-hub-sql-site-")
    try:
        server.psql(SCHEMA)
        server.psql(TABLES, database="useroffice")
        (folder / "db-password").write_text("reader-secret\n")
        doc = yaml.safe_load((demo_site / "site.yaml").read_text())
        doc["proposal_source"] = {
            "kind": "sql", "url": server.url("daas_reader", "useroffice"), "password_file": "db-password",
            "facility": "ESRF", "account_query": ACCOUNT_QUERY, "proposals_query": PROPOSALS_QUERY,
            "cache": {"ttl": 0, "timeout": 10},
        }
        doc["hub"]["data_dir"] = str(folder / "hub")
        for key in ("home_root",):
            if key in doc.get("spawner", {}).get("local", {}):
                doc["spawner"]["local"][key] = str(folder / "homes")
        if "profiles" in doc and "catalogue" in doc["profiles"]:
            doc["profiles"]["catalogue"] = str(demo_site / doc["profiles"]["catalogue"])
        (folder / "site.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        yield folder, server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_logins_read_the_user_office_database_and_survive_its_outage(sql_site):
    folder, server = sql_site
    hub = start_hub(folder)
    try:
        r = hub.login("alice")
        assert r.status_code == 302, r.text[:500]
        model = hub.api("GET", "/users/alice").json()
        assert set(model["groups"]) == {"proposal-MX-1", "proposal-HC-2"}
        state = model["auth_state"]["daas"]
        assert state["stale"] is False and state["account"]["uid"] == 20001

        injected = hub.login("alice' OR '1'='1")
        assert injected.status_code == 403
        assert "not linked to an account at" in re.sub(r"\s+", " ", injected.text)

        server.stop()  # the user office database goes down
        r = hub.login("alice")
        assert r.status_code == 302, "a known person keeps their last known proposals"
        model = hub.api("GET", "/users/alice").json()
        assert model["auth_state"]["daas"]["stale"] is True
        assert set(model["groups"]) == {"proposal-MX-1", "proposal-HC-2"}

        r = hub.login("bob")  # never seen: no answer to fall back on
        assert r.status_code == 503
        text = re.sub(r"\s+", " ", r.text)
        assert "proposal catalogue of" in text and "did not answer" in text
        assert "503 : None" not in text and "Errno" not in text  # the login page says it in words
        assert "Proposal source unavailable during login of bob" in hub.log_text()
        assert hub.api("GET", "/users/bob").status_code == 404
        assert "using the answer from" in hub.log_text()
    finally:
        stop_process(hub.proc, timeout=60)
