"""Hostile requests against a real hub: the table that keeps the 0.1.0 security review found.

Every row is what a curious user or a careless admin would try (docs/security.md):
forged and oversized options, huge and non-finite numbers, other people's proposals
and servers, names with unicode, path tricks and newlines, callback posts with
extra attributes, trailing slashes, logins with odd names. Each expects a 4xx with
a sentence, no 500, nothing started or written. The hub is the session's demo hub
(tests/conftest.py: real JupyterHub + configurable-http-proxy, local backend); the
rows that need OpenID Connect run against the real npm oidc-provider
(tests/test_login_oidc.py), start-up rows run the real ``jupyterhub`` and must be
refused, and the catalogue rows feed every source's own builder. The Slurm script
rows render the real template; the ids that reach it are checked before (see
tests/test_slurm_hub.py for the scheduler itself).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from conftest import BIN, REPO, free_port, make_world_dir

pytestmark = pytest.mark.hub

BIG = int("9" * 400)  # a 400-digit integer: JSON allows it, float() does not
PROPOSAL = "MX-1001"  # alice's


def _text(r: requests.Response) -> str:
    try:
        body = r.json()
        return str(body.get("message", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        return re.sub(r"\s+", " ", r.text)


# -- spawn options through the REST API, as alice with her own token ---------------------------------
OPTION_ROWS = [
    # (id, user_options, status, words in the message)
    ("cpu-400-digits", {"cpu": BIG}, 400, "cpu: the number is out of range; allowed: 1 to"),
    ("memory-400-digits", {"memory": BIG}, 400, "memory: the number is out of range"),
    ("gpu-400-digits", {"gpu": BIG}, 400, "gpu: the number is out of range"),
    ("hours-400-digits", {"hours": BIG}, 400, "hours: the number is out of range"),
    ("hours-negative-400-digits", {"hours": -BIG}, 400, "hours: the number is out of range"),
    ("cpu-400-digit-string", {"cpu": "9" * 400}, 400, "cpu: "),
    ("hours-1e400", {"hours": "1e400"}, 400, "hours: inf is not a number"),
    ("hours-inf", {"hours": "-inf"}, 400, "hours: -inf is not a number"),
    ("cpu-nan", {"cpu": "NaN"}, 400, "cpu: nan is not a number"),
    ("memory-negative", {"memory": -1}, 400, "memory: -1 is out of range"),
    ("cpu-fraction", {"cpu": 1.5}, 400, "cpu: 1.5 is not a whole number"),
    ("cpu-true", {"cpu": True}, 400, "cpu: expected a single value"),
    ("cpu-object", {"cpu": {"$gt": 0}}, 400, "cpu: expected a single value"),
    ("cpu-two-values", {"cpu": [1, 2]}, 400, "cpu: expected one value, got 2"),
    ("hours-zero", {"hours": 0}, 400, "hours: 0 is out of range"),
    ("unknown-cmd", {"cmd": "rm -rf ~"}, 400, "cmd: unknown option; allowed options: proposal"),
    ("unknown-env", {"env": {"LD_PRELOAD": "/tmp/x.so"}}, 400, "env: unknown option"),
    ("unknown-account", {"account": "root"}, 400, "account: unknown option"),
    ("bobs-proposal", {"proposal": "EC-2002"}, 400, 'proposal: "EC-2002" is not one of your active proposals'),
    ("archived-proposal", {"proposal": "HC-3003"}, 400, "is not one of your active proposals"),
    ("proposal-path", {"proposal": "../../etc"}, 400, "is not one of your active proposals"),
    ("proposal-newline", {"proposal": f"{PROPOSAL}\n#SBATCH --mem=0"}, 400, "is not one of your active proposals"),
    ("proposal-unicode-hyphen", {"proposal": "MX\u20101001"}, 400, "is not one of your active proposals"),
    ("proposal-no-proposal", {"proposal": "none"}, 400, "is not one of your active proposals"),
    ("proposal-10k", {"proposal": "M" * 10_000}, 400, "proposal: the value is longer than 64 characters"),
    ("proposal-number", {"proposal": BIG}, 400, "proposal: expected a name, got a very large number"),
    ("proposal-null", {"proposal": None}, 400, "proposal: expected a single value"),
    ("profile-path", {"profile": "../../python"}, 400, 'profile: "../../python" is not offered'),
    ("profile-other-instrument", {"profile": "tomography"}, 400, 'profile: "tomography" is not offered'),
    ("backend-unknown", {"backend": "kubernetes"}, 400, 'backend: "kubernetes" is not available'),
    ("backend-class-path", {"backend": "os.system"}, 400, 'backend: "os.system" is not available'),
    ("cpu-over-profile", {"cpu": 999}, 400, "cpu: 999 is out of range"),
]


@pytest.fixture(scope="module")
def table(hub):
    """Alice's and bob's tokens and browser sessions, and where the hub log stood."""
    tokens = {}
    for user in ("alice", "bob"):
        login = hub.login(user)
        assert login.status_code == 302
        session = login.session  # the person's own session makes their token, as the token page does
        r = session.post(f"{hub.url}/hub/api/users/{user}/tokens", json={"note": "hostile table"}, timeout=30,
                         headers={"X-XSRFToken": session.cookies.get("_xsrf")})
        assert r.status_code == 201, r.text
        tokens[user] = r.json()["token"]
    start = len(hub.log_text())
    yield {"tokens": tokens, "log_start": start}
    # no row may have made the hub fail: no 500, no traceback shown for these requests
    log = hub.log_text()[start:]
    assert not re.search(r"\b500 (GET|POST|PUT|PATCH|DELETE|HEAD) ", log), log[-3000:]


def as_user(hub, table, user, method, path, **kwargs):
    headers = {"Authorization": f"token {table['tokens'][user]}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{hub.url}{path}", headers=headers, timeout=60, allow_redirects=False, **kwargs)


@pytest.mark.parametrize("options,status,words", [r[1:] for r in OPTION_ROWS], ids=[r[0] for r in OPTION_ROWS])
def test_forged_spawn_options_are_refused_with_a_sentence(hub, table, options, status, words):
    r = as_user(hub, table, "alice", "POST", "/hub/api/users/alice/servers/hostile", json=options)
    assert r.status_code == status, r.text[:500]
    message = _text(r)
    assert words in message, message
    assert "Traceback" not in message and "Error:" not in message.split("Not started:")[0]
    assert "docs/" not in message  # nothing the person cannot open
    assert "hostile" not in hub.api("GET", "/users/alice").json()["servers"]  # nothing started


# -- other people's servers, tokens and rights --------------------------------------------------------
OTHERS_ROWS = [
    # (id, method, path, body, allowed statuses)
    ("start-bobs-server", "POST", "/hub/api/users/bob/server", {}, (403, 404)),
    ("start-bobs-named-server", "POST", "/hub/api/users/bob/servers/x", {"proposal": "EC-2002"}, (403, 404)),
    ("stop-bobs-server", "DELETE", "/hub/api/users/bob/server", None, (403, 404)),
    ("read-bob", "GET", "/hub/api/users/bob", None, (403, 404)),
    ("list-users", "GET", "/hub/api/users", None, (403,)),
    ("bobs-tokens", "GET", "/hub/api/users/bob/tokens", None, (403, 404)),
    ("token-for-bob", "POST", "/hub/api/users/bob/tokens", {"note": "x"}, (403, 404)),
    ("make-me-admin", "PATCH", "/hub/api/users/alice", {"admin": True}, (403,)),
    ("rename-me", "PATCH", "/hub/api/users/alice", {"name": "dave"}, (403,)),
    ("admin-scoped-token", "POST", "/hub/api/users/alice/tokens", {"scopes": ["admin:users"]}, (400, 403)),
    ("share-bobs-server", "POST", "/hub/api/shares/bob/", {"user": "alice"}, (403, 404)),
    ("read-bobs-shares", "GET", "/hub/api/shares/bob/", None, (403, 404)),
    ("join-proposal-group", "POST", "/hub/api/groups/proposal-EC-2002/users", {"users": ["alice"]}, (403, 404)),
    ("read-proposal-group", "GET", "/hub/api/groups/proposal-EC-2002", None, (403, 404)),
    ("create-user", "POST", "/hub/api/users/mallory", {}, (403,)),
    ("delete-bob", "DELETE", "/hub/api/users/bob", None, (403, 404)),
    ("shutdown-hub", "POST", "/hub/api/shutdown", {}, (403,)),
    ("proxy-table", "GET", "/hub/api/proxy", None, (403,)),
    # this hub has no Slurm backend, so no port-report API at all (batchspawner's, which sets
    # any posted attribute, is withdrawn); with Slurm, ours takes the server's own token and
    # {"port": N} only (tests/test_slurm_hub.py)
    ("port-report-user-token", "POST", "/hub/api/batchspawner", {"port": 4242}, (404,)),
    ("port-report-extra-attrs", "POST", "/hub/api/batchspawner", {"port": 4242, "cmd": ["sh"], "ip": "0.0.0.0"},
     (404,)),
]


@pytest.mark.parametrize("method,path,body,statuses", [r[1:] for r in OTHERS_ROWS], ids=[r[0] for r in OTHERS_ROWS])
def test_others_servers_and_rights_are_out_of_reach(hub, table, method, path, body, statuses):
    kwargs = {"json": body} if body is not None else {}
    r = as_user(hub, table, "alice", method, path, **kwargs)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert _text(r).strip(), "a refusal says why"
    bob = hub.api("GET", "/users/bob").json()
    assert bob["servers"] == {} and not bob["admin"]
    alice = hub.api("GET", "/users/alice").json()
    assert alice["name"] == "alice" and not alice["admin"]
    assert hub.api("GET", "/users/mallory").status_code == 404


def test_a_browser_session_cannot_open_bobs_spawn_page(hub, table):
    session = hub.login("alice").session
    r = session.get(f"{hub.url}/hub/spawn/bob", timeout=60, allow_redirects=False)
    assert r.status_code in (403, 404), r.status_code
    assert hub.api("GET", "/users/bob").json()["servers"] == {}


# -- every hub page with a trailing slash ---------------------------------------------------------------
PAGES = ["login", "home", "spawn", "quota", "token", "admin", "logout"]


@pytest.mark.parametrize("page", PAGES)
def test_pages_answer_with_a_trailing_slash(hub, table, page):
    session = hub.login("alice").session
    r = session.get(f"{hub.url}/hub/{page}/?x=1", timeout=60, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == f"/hub/{page}?x=1", (r.status_code, r.headers)
    final = session.get(f"{hub.url}/hub/{page}/", timeout=60)
    assert final.status_code in (200, 403), final.status_code  # admin: 403 for alice, not 404


@pytest.mark.parametrize("path", ["/hub//evil.example/", "/hub/%2F%2Fevil.example/", "/hub/login//"])
def test_slash_redirects_stay_on_the_hub(hub, table, path):
    r = requests.get(f"{hub.url}{path}", timeout=30, allow_redirects=False)
    assert r.status_code in (302, 404), r.status_code
    if r.status_code == 302:
        assert r.headers["Location"].startswith("/hub/") and not r.headers["Location"].startswith("//")


def test_login_form_posted_with_a_slash_still_signs_in(hub, table):
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    r = s.post(f"{hub.url}/hub/login/", data={"username": "bob", "_xsrf": s.cookies.get("_xsrf")}, timeout=60)
    assert r.status_code == 200 and r.url.startswith(f"{hub.url}/hub/"), (r.status_code, r.url)
    assert s.get(f"{hub.url}/hub/home", timeout=30, allow_redirects=False).status_code == 200


# -- the demo login with odd names: refused, never a 500, no user made ----------------------------------
LOGIN_ROWS = [
    ("path", "../../etc/passwd"),
    ("cyrillic-a", "\u0430lice"),
    ("fullwidth", "\uff41lice"),
    ("sql", "alice' OR '1'='1"),
    ("newline", "bob\nalice"),
    ("path-to-dave", "alice/../dave"),
    ("10k", "a" * 10_000),
    ("template", "{{7*7}}"),
]


@pytest.mark.parametrize("name", [r[1] for r in LOGIN_ROWS], ids=[r[0] for r in LOGIN_ROWS])
def test_odd_login_names_are_refused(hub, table, name):
    r = hub.login(name)
    assert r.status_code in (400, 403), r.status_code
    users = {u["name"] for u in hub.api("GET", "/users").json()}
    assert name not in users and name.lower() not in users


def test_login_without_the_form_token_is_refused(hub, table):
    r = requests.post(f"{hub.url}/hub/login", data={"username": "dave"}, timeout=30, allow_redirects=False)
    assert r.status_code == 403


# -- start-up: the passwordless demo needs its switch, and loopback only ----------------------------------
def run_hub(env_extra: dict, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DAAS_HUB_SETTINGS", "JUPYTERHUB_CRYPT_KEY")}
    env.update(env_extra)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(BIN / "jupyterhub"), "-f", str(REPO / "jupyterhub_config.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_no_settings_is_a_refused_start_not_the_demo(tmp_path):
    r = run_hub({"DAAS_HUB_DEMO_DIR": str(tmp_path / "demo")}, f"--JupyterHub.bind_url=http://127.0.0.1:{free_port()}",
                cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-2000:]
    assert "DAAS_HUB_SETTINGS is not set" in out and "run `daas-hub demo`" in out
    assert "Traceback" not in out
    assert not (tmp_path / "demo").exists()  # nothing generated


@pytest.mark.parametrize("args,shown", [
    ([f"--JupyterHub.bind_url=http://:{free_port()}"], "http://:"),
    ([f"--JupyterHub.bind_url=http://0.0.0.0:{free_port()}"], "http://0.0.0.0"),
    ([f"--JupyterHub.bind_url=http://127.0.0.1:{free_port()}", f"--JupyterHub.hub_bind_url=http://0.0.0.0:{free_port()}"],
     "http://0.0.0.0"),
    ([f"--JupyterHub.bind_url=http://127.0.0.1:{free_port()}", "--JupyterHub.hub_ip="], "http://:"),
], ids=["empty-host", "all-interfaces", "hub-bind-url", "hub-ip-empty"])
def test_demo_login_refuses_any_address_but_loopback(demo_site, args, shown):
    folder = make_world_dir("daas-hub-exposed-")
    try:
        settings = yaml.safe_load((demo_site / "site.yaml").read_text())
        settings["proposal_source"]["path"] = str(demo_site / "proposals.yaml")
        settings["spawner"]["local"]["home_root"] = str(demo_site / "homes")
        settings["hub"]["data_dir"] = str(folder)
        (folder / "site.yaml").write_text(yaml.safe_dump(settings))
        r = run_hub({"DAAS_HUB_SETTINGS": str(folder / "site.yaml"),
                     "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(8)}, *args, cwd=folder)
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-3000:]
    assert "the demo login lets anyone sign in without a password" in out and shown in out
    assert "Traceback" not in out


# -- catalogue values from every source: path tricks, newlines, unicode never become ids or names -----
BAD_IDS = ["../etc", "MX-1/../../root", "MX-1\n#SBATCH --mem=0", "MX 1", "\u216f-1", "", ".hidden", "a" * 65,
           "MX-1;reboot", "$(id)"]
BAD_NAMES = ["../root", "alice\n", "Al ice", "\u0430lice", "", "-rf", "x" * 33, "a/b", "o'brien", "`id`"]


@pytest.mark.parametrize("pid", BAD_IDS, ids=[repr(p)[:20] for p in BAD_IDS])
def test_unsafe_proposal_ids_never_become_proposals(pid, tmp_path):
    from daas_hub.errors import SettingsError
    from daas_hub.model import Account, Member, Proposal, UnsafeValue
    from daas_hub.sources.scicat_source import proposal_from_scicat
    from daas_hub.sources.sql_source import proposals_from_rows
    from daas_hub.sources.yaml_source import parse_proposals_file

    with pytest.raises(UnsafeValue, match="proposal id .* is not allowed"):
        Proposal(pid, "t", "ID11", "F")
    # YAML: a settings error naming the entry
    doc = {"facility": "F", "accounts": [{"username": "alice"}],
           "proposals": [{"id": pid, "title": "t", "instrument": "ID11", "members": [{"username": "alice"}]}]}
    with pytest.raises(SettingsError) as e:
        parse_proposals_file(doc, tmp_path / "proposals.yaml")
    assert "proposals[0]" in str(e.value) and "Fix:" in str(e.value)
    # SQL: left out, the reason kept for the log
    alice = Account("alice")
    unsafe = []
    assert proposals_from_rows([{"id": pid}, {"id": "OK-1"}], alice, "F", {}, unsafe) == \
        [Proposal("OK-1", "", "", "F", members=(Member("alice"),))]
    assert len(unsafe) == 1
    # SciCat: refused (the source logs and skips it)
    with pytest.raises(UnsafeValue):
        proposal_from_scicat({"proposalId": pid, "title": "t"}, alice, facility="F")


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_unsafe_usernames_never_become_accounts(name, tmp_path):
    from daas_hub.errors import SettingsError
    from daas_hub.model import Account, Member, UnsafeValue
    from daas_hub.sources.sql_source import account_from_row
    from daas_hub.sources.yaml_source import parse_proposals_file

    for build in (lambda: Account(name), lambda: Member(name), lambda: account_from_row({"username": name})):
        with pytest.raises(UnsafeValue, match="username .* is not allowed"):
            build()
    doc = {"facility": "F", "accounts": [{"username": name}], "proposals": []}
    with pytest.raises(SettingsError):
        parse_proposals_file(doc, tmp_path / "proposals.yaml")


def test_icat_investigations_with_unsafe_names_are_left_out():
    from types import SimpleNamespace as E

    from daas_hub.sources import IcatProposalSource

    def inv(i, name, users):
        return E(id=i, name=name, visitId="v1", title="T", startDate=None, endDate=None, releaseDate=None,
                 facility=E(name="ESRF"), investigationInstruments=[E(instrument=E(name="ID30A"))],
                 investigationUsers=[E(role="principal_experimenter", user=E(name=n)) for n in users])

    source = IcatProposalSource(url="https://icat.example.org", facility="ESRF", user_name_template="ldap/{username}",
                                account_pattern=r"^ldap/(?P<username>.+)$")
    proposals = source._to_proposals(
        [inv(1, "MX-1\n#SBATCH --mem=0", ["ldap/alice"]), inv(2, "../x", ["ldap/alice"]),
         inv(3, "MX-3", ["ldap/alice", "ldap/o'brien", "ldap/../root"])], {})
    assert [p.id for p in proposals] == ["MX-3"]
    assert [m.username for m in proposals[0].members] == ["alice"]


# -- the Slurm script: nothing unescaped reaches it -------------------------------------------------------
@pytest.mark.parametrize("value", ["x\n#SBATCH --mem=0", "x\rrm -rf ~", "$(reboot)", "a`id`b", "\u0430"])
def test_job_script_comment_line_holds_no_command(value):
    slurm = pytest.importorskip("daas_hub.spawners.slurm")
    from daas_hub.options import SessionRequest
    from daas_hub.profiles import load_catalogue

    spec = slurm.JobSpec(
        job_name="daas-hub", hub_user=value, home="/homes/x y", output="/homes/x y/.log-%j", export=("HOME",),
        partition="", account="", qos="", request=SessionRequest("MX-1001", "diffraction", "slurm", 1, 1024**3, 0, 1),
        profile=load_catalogue().get("diffraction"), bind_address="127.0.0.1", command=("/v/bin/x",),
    )
    script = slurm.render_job_script(spec)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and lines[1].startswith("# daas-hub session daas-hub for ")
    assert all(line.startswith("#SBATCH ") for line in lines[2:lines.index("set -eu") - 1])
    assert value not in script and "--mem=0" not in script and "'/homes/x y'" in script


# -- a hub without root, home folders -----------------------------------------------------------------------
def test_a_site_hub_without_root_refuses_to_start(tmp_path):
    from dataclasses import replace

    from daas_hub.config import check_hub_account
    from daas_hub.demo import site_settings
    from daas_hub.errors import SettingsError
    from daas_hub.settings import parse_settings

    (tmp_path / "proposals.yaml").write_text("")
    doc = site_settings("http://127.0.0.1:8000")
    demo = parse_settings(doc, tmp_path / "site.yaml")
    check_hub_account(demo, 1000)  # the demo: its sessions share one account anyway (docs/security.md)
    check_hub_account(replace(demo, demo=False), 0)
    with pytest.raises(SettingsError, match="not root, so it cannot start sessions as other accounts") as e:
        check_hub_account(replace(demo, demo=False), 1000)
    assert "cookie secret, database and encryption key" in str(e.value)
    with pytest.raises(SettingsError, match="not root"):  # one local or Slurm backend is enough to need root
        check_hub_account(replace(demo, demo=False, backend="kubernetes", backends=("kubernetes", "slurm")), 1000)
    # sessions only in pods (the chart's hub runs as uid 1000): nothing runs on the hub's machine
    check_hub_account(replace(demo, demo=False, backend="kubernetes", backends=("kubernetes",)), 1000)


def test_sessions_as_another_account_need_root():
    from daas_hub.safety import session_account_problem

    assert session_account_problem(hub_euid=0, hub_user="root", session_user="alice") is None
    assert session_account_problem(hub_euid=1000, hub_user="hub", session_user="hub") is None
    assert "cannot start a session as alice" in session_account_problem(hub_euid=1000, hub_user="hub",
                                                                        session_user="alice")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_home_root_and_homes_must_belong_to_the_right_account(tmp_path):
    from daas_hub.safety import home_problem, home_root_problem

    root = tmp_path / "homes"
    root.mkdir(mode=0o755)
    assert home_root_problem(str(root), hub_uid=0) is None
    os.chown(root, 4242, 4242)
    assert "owned by uid 4242, not root" in home_root_problem(str(root), hub_uid=0)
    os.chown(root, 0, 0)
    root.chmod(0o777)
    assert "writable by group or others" in home_root_problem(str(root), hub_uid=0)
    root.chmod(0o755)
    (tmp_path / "link").symlink_to(root)
    assert "not a folder" in home_root_problem(str(tmp_path / "link"), hub_uid=0)
    home = root / "alice"
    home.mkdir(mode=0o700)
    assert "owned by uid 0, not the session's account" in home_problem(str(home), uid=21001)
    os.chown(home, 21001, 21001)
    assert home_problem(str(home), uid=21001) is None
    (root / "bob").symlink_to("/etc")
    assert "symbolic link" in home_problem(str(root / "bob"), uid=21002)


# -- OpenID Connect: forged and replayed answers, another client's code, what auth_state keeps -----------
@pytest.fixture(scope="module")
def oidc(demo_site, output_dir):
    """A production-like hub (not demo, crypt key set) with two real npm oidc-provider instances."""
    from test_login_oidc import oidc_hub_running

    with oidc_hub_running(demo_site, output_dir, tag="hostile") as hub:
        start = len(hub.log_text())
        yield hub
        log = hub.log_text()[start:]
        assert not re.search(r"\b500 (GET|POST|PUT|PATCH|DELETE|HEAD) ", log), log[-3000:]


def _callback_of(hub, provider: str, login: str, session: requests.Session | None = None):
    """Sign in at the provider and stop where it sends the browser back: (session, callback URL)."""
    from urllib.parse import urljoin

    s = session or requests.Session()
    r = s.get(f"{hub.url}/hub/{provider}/oauth_login", timeout=30)
    action = re.search(r'<form autocomplete="off" action="([^"]+)"', r.text).group(1)
    r = s.post(urljoin(r.url, action), timeout=60, allow_redirects=False, data={
        "prompt": "login", "login": hub.providers[provider].subjects[login], "password": "any password"})
    for _ in range(10):
        location = urljoin(r.url, r.headers["Location"])
        if location.startswith(hub.url):
            return s, location
        r = s.get(location, timeout=60, allow_redirects=False)
    raise AssertionError("the provider never sent the browser back")


OIDC_CALLBACK_ROWS = [
    # (id, query, status, words)
    ("forged-state", "code=abc&state=forged", 400, "does not belong to a sign-in started in this browser"),
    ("no-state", "code=abc", 400, "does not belong to a sign-in started in this browser"),
    ("extra-attributes", "code=abc&state=forged&admin=1&username=dave&name=dave", 400, "does not belong"),
    ("provider-error-text", "error=access_denied&error_description=Call+0800-HELPDESK+and+give+your+password",
     403, "did not sign you in"),
]


@pytest.mark.browser
@pytest.mark.parametrize("query,status,words", [r[1:] for r in OIDC_CALLBACK_ROWS], ids=[r[0] for r in OIDC_CALLBACK_ROWS])
def test_forged_callbacks_are_refused(oidc, query, status, words):
    s = requests.Session()
    r = s.get(f"{oidc.url}/hub/umbrella/oauth_callback?{query}", timeout=30, allow_redirects=False)
    assert r.status_code == status, (r.status_code, r.text[:300])
    page = re.sub(r"\s+", " ", r.text)
    assert words in page and "0800-HELPDESK" not in page and "Traceback" not in page
    assert s.get(f"{oidc.url}/hub/home", timeout=30, allow_redirects=False).status_code == 302  # not signed in
    assert oidc.api("GET", "/users/dave").status_code == 404


@pytest.mark.browser
def test_a_state_replayed_in_another_browser_is_refused(oidc):
    _, callback = _callback_of(oidc, "umbrella", "bob")
    other = requests.Session()  # the state cookie stayed in the first browser
    r = other.get(callback, timeout=30, allow_redirects=False)
    assert r.status_code == 400 and "does not belong to a sign-in started in this browser" in r.text
    assert oidc.api("GET", "/users/bob").status_code == 404


@pytest.mark.browser
def test_a_code_issued_to_another_client_is_refused(oidc):
    """The facility provider's code (audience daas-hub-facility) posted to the UmbrellaID callback."""
    s, callback = _callback_of(oidc, "facility", "dave")
    forged = callback.replace("/hub/facility/oauth_callback", "/hub/umbrella/oauth_callback")
    r = s.get(forged, timeout=60, allow_redirects=False)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert "refused to complete this sign-in" in r.text or "could not be verified" in r.text
    assert oidc.api("GET", "/users/dave").status_code == 404


@pytest.mark.browser
def test_an_email_the_provider_did_not_verify_links_nothing(oidc):
    s, callback = _callback_of(oidc, "umbrella", "mallory")
    r = s.get(callback, timeout=60, allow_redirects=False)
    assert r.status_code == 403 and "not linked to an account" in re.sub(r"\s+", " ", r.text)
    assert oidc.api("GET", "/users/dave").status_code == 404


@pytest.mark.browser
def test_auth_state_keeps_no_provider_tokens(oidc):
    s, callback = _callback_of(oidc, "umbrella", "alice")
    r = s.get(callback, timeout=60, allow_redirects=False)
    assert r.status_code == 302, r.text[:300]
    model = oidc.api("GET", "/users/alice").json()
    state = model["auth_state"]
    assert set(state) <= {"daas", "daas_login", "daas_conditions"}, sorted(state)
    assert state["daas"]["account"]["username"] == "alice"
    assert set(state["daas_login"]) == {"provider", "end_session_endpoint", "id_token"}  # the logout hint
