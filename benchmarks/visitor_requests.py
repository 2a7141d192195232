"""What the per-request visitor check costs: a shared session's requests, owner vs visitor, daas-hub vs vanilla.

Two real hubs (JupyterHub + configurable-http-proxy) on the demo site, local
backend, run side by side in the same run:

- ``daas-hub``: the shipped settings; sessions load the server extension
  :mod:`daas_hub.spawners.visitors`, which never reuses the hub's answer about a
  visitor (docs/teams.md): every request of a visitor asks the hub again
  (``GET /hub/api/user``).
- ``vanilla``: the same settings, but sessions run with that extension switched off
  the way Jupyter switches a server extension off (``jupyter server extension
  disable``: ``{"daas_hub.spawners.visitors": false}`` in the session's own config
  folder, given as ``JUPYTER_CONFIG_DIR`` by ``c.Spawner.environment``). The session
  then uses JupyterHub's own identity provider: HubAuth keeps the hub's answer about
  everyone, visitors included, for ``HubOAuth.cache_max_age`` (300 s). Everything else
  (spawner, session program, other extensions) is the same. (A command-line
  ``--ServerApp.jpserver_extensions`` in ``c.Spawner.args`` would do too: daas-hub-singleuser
  merges it into its own, docs/local-backend.md; the config folder is what the benchmark
  was measured with.)

On each hub alice (MX-1001) signs in through the demo login form, starts her session
from the spawn form and shares it with bob (a member of MX-1001) through
``POST /hub/api/daas/shares/alice/``, as tests/test_hub_teams.py does. Each then signs
in to the session both ways people really do (``--auth``):

- ``token``: an API token for the session, made from their own hub session
  (``POST /hub/api/users/<name>/tokens``, scope ``access:servers!server=alice/``), sent
  as ``Authorization: token ...``: an API client (a script, an editor connected to the session);
- ``cookie``: a browser's way: the session's page sends them through the hub's OAuth
  pages (bob confirms "Authorize access", as in the browser test), and the session's
  OAuth callback sets its cookie, ``jupyterhub-user-alice``, sent with every request
  (JupyterLab's own API calls).

Both end in ``HubAuth.user_for_token`` with an OAuth or API token, cached for the owner
and, in vanilla, for the visitor too.

Timed: ``GET /user/alice<path>`` (default ``/api/status``, a cheap endpoint that
needs a signed-in person, so the check weighs most) through the proxy, as
alice (owner) and as bob (visitor):

- ``seq``: ``--requests`` requests one after the other (one keep-alive connection);
- ``xC``: the same number spread over ``--clients`` threads (each its own connection);
  the clients run on the same machine, so they take CPU from the hub and the session.

Each case starts with 5 untimed requests (the owner's answer is then in the cache).
Cases alternate between the hubs, ``--rounds`` times. Printed per case: latency
p50/p95/max in ms over all rounds, requests/s (all requests / all their time), CPU
seconds of the hub's process and of the session's process tree per run of
``--requests`` (mean over rounds; psutil), and how many times the session asked the
hub (``/hub/api/user`` lines in the hub's log) per request. Then the ratios visitor /
owner and daas-hub / vanilla. The load average is printed before and after.

    <prefix>/venv/bin/python benchmarks/visitor_requests.py [--requests 200] [--clients 10] [--rounds 3]
                                        [--auth token cookie] [--path /api/status] [--smoke]

``--smoke``: 20 requests, 2 clients, one round (``tests/test_benchmarks.py`` runs it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from figures import load, pct  # noqa: E402

from conftest import Hub, start_demo_hub, stop_process  # noqa: E402

KINDS = ("daas-hub", "vanilla")
WHO = {"owner": "alice", "visitor": "bob"}
AUTHS = ("token", "cookie")
WARM_UP = 5


def start(kind: str) -> tuple[Hub, Path]:
    off = ("daas_hub.spawners.visitors",) if kind == "vanilla" else ()
    return start_demo_hub(f"visitor-bench-{kind}-", extensions_off=off)


def xsrf(session: requests.Session) -> dict:
    return {"X-XSRFToken": session.cookies.get("_xsrf", path="/hub/") or session.cookies.get("_xsrf")}


class Credentials:
    """How one person is signed in to the session: a token (``Authorization`` header) or a
    browser's cookies (after JupyterHub's OAuth pages)."""

    def __init__(self, *, token: str = "", cookies=None):
        self.token, self.cookies = token, cookies

    def client(self) -> requests.Session:
        s = requests.Session()
        if self.token:
            s.headers["Authorization"] = f"token {self.token}"
        if self.cookies is not None:
            s.cookies = self.cookies.copy()
        return s


def oauth_cookies(hub: Hub, person: requests.Session) -> requests.cookies.RequestsCookieJar:
    """Open alice's session as a browser does: its page sends the person through the hub's OAuth
    pages, where a visitor confirms "Authorize access" (the owner is not asked); the session's
    OAuth callback sets its cookie (``jupyterhub-user-alice``)."""
    r = person.get(f"{hub.url}/user/alice/lab", timeout=120)
    if "/oauth2/authorize" in r.url:
        form = {"_xsrf": re.search(r'name="_xsrf" value="([^"]*)"', r.text).group(1),
                "scopes": re.findall(r'type="hidden" name="scopes" value="([^"]*)"', r.text)}
        r = person.post(r.url, data=form, timeout=120)
    if r.status_code != 200 or "jupyterhub-user-alice" not in person.cookies.keys():
        raise RuntimeError(f"the OAuth pages did not sign in to alice's session: HTTP {r.status_code} at {r.url}")
    return person.cookies


def share_and_sign_in(hub: Hub) -> dict[tuple[str, str], Credentials]:
    """alice's session, shared with bob; each signed in to it with a token and with cookies."""
    alice = hub.signed_in("alice")
    r = hub.submit_form(alice, "alice")
    if r.status_code != 200:
        raise RuntimeError(f"alice's session did not start: HTTP {r.status_code} {r.text[:300]}")
    hub.wait_ready("alice", timeout=300)
    r = alice.post(f"{hub.url}/hub/api/daas/shares/alice/", json={"users": ["bob"]}, headers=xsrf(alice), timeout=60)
    r.raise_for_status()
    credentials = {}
    for role, name in WHO.items():
        person = alice if name == "alice" else hub.signed_in(name)
        r = person.post(f"{hub.url}/hub/api/users/{name}/tokens", headers=xsrf(person), timeout=60,
                        json={"scopes": ["access:servers!server=alice/"], "note": "visitor benchmark",
                              "expires_in": 7200})
        if r.status_code != 201:
            raise RuntimeError(f"no token for {name}: HTTP {r.status_code} {r.text[:300]}")
        credentials[role, "token"] = Credentials(token=r.json()["token"])
        credentials[role, "cookie"] = Credentials(cookies=oauth_cookies(hub, person))
    return credentials


def session_process(hub: Hub) -> psutil.Process:
    for p in psutil.Process(hub.proc.pid).children(recursive=True):
        try:
            if "-singleuser" in " ".join(p.cmdline()) and p.environ().get("JUPYTERHUB_USER") == "alice":
                return p
        except psutil.Error:
            continue
    raise LookupError("no session process for alice")


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def hub_asks(log: Path, offset: int) -> int:
    """The session's questions to the hub (``GET /hub/api/user``) logged after ``offset``."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return len(re.findall(r"\bGET /hub/api/user\b(?![/?\w])", text))


def timed_requests(url: str, credentials: Credentials, count: int, clients: int, on_start) -> tuple[list[float], float]:
    """``count`` GETs of ``url`` over ``clients`` threads (each a keep-alive connection, opened
    first); ``on_start()`` is called when every connection is open, just before the clock
    starts. Returns the latencies and the wall seconds."""
    per = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    started = []

    def go():  # run once, when every connection is open, before any client goes on
        on_start()
        started.append(time.perf_counter())

    barrier = threading.Barrier(clients, action=go)

    def client(n: int) -> list[float]:
        out = []
        with credentials.client() as s:
            try:
                s.get(url, timeout=60).raise_for_status()  # the connection, opened before the clock starts
            except BaseException:
                barrier.abort()  # the others stop waiting
                raise
            barrier.wait(120)
            for _ in range(n):
                t0 = time.perf_counter()
                r = s.get(url, timeout=60)
                out.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"GET {url}: HTTP {r.status_code} {r.text[:200]}")
        return out

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, n) for n in per]
        latencies = [x for f in futures for x in f.result()]
        wall = time.perf_counter() - started[0]
    return latencies, wall


class Target:
    """One hub with alice's shared session: what a case is measured against."""

    def __init__(self, kind: str, path: str):
        self.kind = kind
        self.hub, self.site = start(kind)
        try:
            self.credentials = share_and_sign_in(self.hub)
            self.session = session_process(self.hub)
        except BaseException:
            self.close()
            raise
        self.url = f"{self.hub.url}/user/alice{path}"
        self.hub_proc = psutil.Process(self.hub.proc.pid)

    def extension_on(self) -> bool:
        return "visitors of this session are checked with the hub on every request" in self.hub.log_text()

    def measure(self, role: str, auth: str, count: int, clients: int) -> dict:
        credentials = self.credentials[role, auth]
        with credentials.client() as s:
            for _ in range(WARM_UP):
                s.get(self.url, timeout=60).raise_for_status()
        session_tree = [self.session, *self.session.children(recursive=True)]
        before = {}

        def on_start():
            time.sleep(0.2)  # the hub's access log of the connections' first requests
            before.update(offset=self.hub.log.stat().st_size, hub=cpu_s([self.hub_proc]), ses=cpu_s(session_tree))

        latencies, wall = timed_requests(self.url, credentials, count, clients, on_start)
        hub_cpu, ses_cpu = cpu_s([self.hub_proc]) - before["hub"], cpu_s(session_tree) - before["ses"]
        time.sleep(0.2)  # the hub's access log of the last request
        return {"lat": latencies, "wall": wall, "hub_cpu": hub_cpu, "ses_cpu": ses_cpu,
                "asks": hub_asks(self.hub.log, before["offset"])}

    def close(self) -> None:
        try:
            self.hub.stop_all_servers()
        except Exception:  # noqa: BLE001 - the hub is stopped by its PID next anyway
            pass
        stop_process(self.hub.proc, timeout=120)
        shutil.copy(self.hub.log, Path("/tmp") / f"visitor-requests-{self.kind}.log")
        shutil.rmtree(self.site, ignore_errors=True)


def summary(runs: list[dict], count: int) -> dict:
    lat = [x for r in runs for x in r["lat"]]
    return {"p50": pct(lat, 0.5) * 1000, "p95": pct(lat, 0.95) * 1000, "max": max(lat) * 1000,
            "rps": len(lat) / sum(r["wall"] for r in runs),
            "hub_cpu": sum(r["hub_cpu"] for r in runs) / len(runs),
            "ses_cpu": sum(r["ses_cpu"] for r in runs) / len(runs),
            "asks": sum(r["asks"] for r in runs) / (count * len(runs))}


HEAD = (f"{'hub':8} {'who':7} {'auth':6} {'mode':4} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'req/s':>7} "
        f"{'hub CPU-s':>9} {'session CPU-s':>13} {'hub asks/req':>12}")


def row(case: tuple[str, str, str, str], s: dict) -> str:
    kind, role, auth, mode = case
    return (f"{kind:8} {role:7} {auth:6} {mode:4} {s['p50']:>7.1f} {s['p95']:>7.1f} {s['max']:>7.1f} "
            f"{s['rps']:>7.1f} {s['hub_cpu']:>9.2f} {s['ses_cpu']:>13.2f} {s['asks']:>12.2f}")


def compare(a: dict, b: dict) -> str:
    return (f"p50 {a['p50'] / b['p50']:.2f}x  p95 {a['p95'] / b['p95']:.2f}x  req/s {a['rps'] / b['rps']:.2f}x  "
            f"hub CPU {ratio(a['hub_cpu'], b['hub_cpu'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per case and round")
    ap.add_argument("--clients", type=int, default=10, help="threads of the concurrent case (1: sequential only)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--auth", nargs="+", choices=AUTHS, default=list(AUTHS), help="how people sign in to the session")
    ap.add_argument("--path", default="/api/status", help="the session endpoint timed (under /user/alice)")
    ap.add_argument("--smoke", action="store_true", help="20 requests, 2 clients, one round (make test)")
    args = ap.parse_args()
    if args.smoke:
        args.requests, args.clients, args.rounds = 20, 2, 1
    if args.requests < 1 or args.clients < 1 or args.rounds < 1 or args.clients > args.requests:
        ap.error("--requests, --clients and --rounds must be at least 1, and --clients at most --requests")
    modes = {"seq": 1, **({f"x{args.clients}": args.clients} if args.clients > 1 else {})}
    auths = [a for a in AUTHS if a in args.auth]
    print(f"load before: {load()} ({os.cpu_count()} cores)", flush=True)
    targets: dict[str, Target] = {}
    try:
        for kind in KINDS:
            targets[kind] = Target(kind, args.path)
        on = {kind: t.extension_on() for kind, t in targets.items()}
        if on != {"daas-hub": True, "vanilla": False}:
            raise RuntimeError(f"the visitors extension is not on in daas-hub and off in vanilla: {on}")
        print(f"GET /user/alice{args.path} through the proxy, {args.requests} requests per case, "
              f"{args.rounds} round(s), hubs alternating; sessions started, shared with bob", flush=True)
        runs: dict[tuple[str, str, str, str], list[dict]] = {}
        for _ in range(args.rounds):
            for mode, clients in modes.items():
                for auth in auths:
                    for role in WHO:
                        for kind in KINDS:
                            runs.setdefault((kind, role, auth, mode), []).append(
                                targets[kind].measure(role, auth, args.requests, clients))
    finally:
        for t in targets.values():
            t.close()
    s = {case: summary(r, args.requests) for case, r in runs.items()}
    print()
    print(HEAD)
    for mode in modes:
        for auth in auths:
            for kind in KINDS:
                for role in WHO:
                    print(row((kind, role, auth, mode), s[kind, role, auth, mode]))
    print("\nratios visitor / owner")
    for mode, auth, kind in itertools.product(modes, auths, KINDS):
        print(f"  {kind:8} {auth:6} {mode:4} {compare(s[kind, 'visitor', auth, mode], s[kind, 'owner', auth, mode])}")
    print("ratios daas-hub / vanilla")
    for mode, auth, role in itertools.product(modes, auths, WHO):
        print(f"  {role:8} {auth:6} {mode:4} "
              f"{compare(s['daas-hub', role, auth, mode], s['vanilla', role, auth, mode])}")
    print(f"what the check adds per visitor request (daas-hub - vanilla, {args.requests} requests a run)")
    for mode in modes:
        for auth in auths:
            d, v = s["daas-hub", "visitor", auth, mode], s["vanilla", "visitor", auth, mode]
            print(f"  {auth:6} {mode:4} latency p50 {d['p50'] - v['p50']:+.1f} ms  p95 {d['p95'] - v['p95']:+.1f} ms"
                  f"   hub CPU {(d['hub_cpu'] - v['hub_cpu']) / args.requests * 1000:+.2f} ms"
                  f"   session CPU {(d['ses_cpu'] - v['ses_cpu']) / args.requests * 1000:+.2f} ms")
    print(f"load after: {load()}")


def ratio(a: float, b: float) -> str:
    """``a / b``; the hub's CPU-s of an all-cached run is near zero, so small figures are shown as such."""
    return f"{a / b:.1f}x" if b >= 0.05 else f"{a:.2f} s vs {b:.2f} s"


if __name__ == "__main__":
    main()
