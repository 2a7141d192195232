"""A class starts at once: N sessions through the REST API, daas-hub vs vanilla JupyterHub, same run.

For each N, two real hubs (JupyterHub + configurable-http-proxy) run one after
the other on this machine, local backend:

- ``daas-hub``: the shipped settings (the demo site's ``site.yaml`` through
  ``jupyterhub_config.py``: daas spawner, local backend, start queue, session
  priority), N accounts added to the demo catalogue, all members of one proposal.
  The users are created through the API and never sign in (an instructor's
  "start all"): their proposals are read from the catalogue at the start.
- ``vanilla``: JupyterHub 6.1.1 with DummyAuthenticator and
  SimpleLocalProcessSpawner, ``start_timeout`` and ``http_timeout`` 300 s, other
  settings default; the same single-user environment (this venv).

The burst is driven with a token the hub generated (``POST /hub/api/users/bench-admin/tokens``,
an account given the service's scopes by a role), as an instructor's script would use: the
configured service token of the tests is hashed with 16,384 SHA-512 rounds at every
request (JupyterHub's rule for tokens it did not generate), about 10 ms of the
hub's event loop per request on this machine, the same on both hubs.

All N ``POST /hub/api/users/<name>/server`` are fired together; readiness is read
with one ``GET /hub/api/users?state=ready`` (paginated) every 0.5 s; the hub API is
sampled 4 times a second during the burst (one ``GET /hub/api/users/<name>``,
60 s client timeout). Printed per N and hub: ready, failed, truly reachable
(``/user/<name>/api`` through the proxy answers 200: the user's own server),
all-ready seconds, time-to-ready p50/p95, hub API p50/p95/max and time-outs,
peak memory (RSS summed over the hub, the proxy and every session: shared pages
counted per process), seconds until all stopped; then the ratios daas-hub /
vanilla. Then one session alone on each: CPU seconds of its start (the server and
its child processes), peak RSS of the start, RSS after 10 s idle.

The Slurm backend is not benchmarked here: the test cluster is one node with a
handful of CPUs (tests/slurm_cluster.py), far from a class.

    <prefix>/venv/bin/python benchmarks/burst.py [--sizes 25 50 100] [--smoke] [--only daas|vanilla]

``--smoke``: N = 2, both hubs, one round (``tests/test_benchmarks.py`` runs it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from figures import load, pct  # noqa: E402

from conftest import BIN, Hub, free_port, make_world_dir, start_hub, stop_process, wait_until  # noqa: E402

API_TIMEOUT = 60
PAGE = "application/jupyterhub-pagination+json"

VANILLA_CONFIG = """\
import os
c.JupyterHub.bind_url = {url!r}
c.JupyterHub.hub_bind_url = {hub_bind!r}
c.ConfigurableHTTPProxy.api_url = {proxy_api!r}
c.JupyterHub.db_url = {db!r}
c.JupyterHub.cookie_secret_file = {cookie!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r} + "/{{username}}"
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 300
c.Spawner.args = {args!r}
c.JupyterHub.services = [{{"name": "bench", "api_token": os.environ["BENCH_TOKEN"]}}]
c.JupyterHub.load_roles = [{{"name": "bench", "services": ["bench"],
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users", "tokens"]}}]
c.JupyterHub.load_roles.append({{"name": "bench-driver", "users": ["bench-admin"],
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"]}})
"""

#: the account whose generated token drives the daas hub, and the service's right to make it
DAAS_TOKEN_ROLE = """
c.JupyterHub.load_roles.append({"name": "bench-tokens", "scopes": ["tokens"], "services": ["daas-tests"]})
c.JupyterHub.load_roles.append({"name": "bench-driver", "users": ["bench-admin"],
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"]})
"""


def users(n: int) -> list[str]:
    return [f"class{i:03d}" for i in range(1, n + 1)]


# -- the two hubs
def daas_hub(n: int) -> tuple[Hub, Path]:
    from daas_hub.demo import ensure_demo_site

    site = make_world_dir("daas-burst-")
    ensure_demo_site(site)
    catalogue = site / "proposals.yaml"
    doc = yaml.safe_load(catalogue.read_text())
    names = users(n)
    doc["accounts"] += [{"username": u, "display_name": f"Participant {u}"} for u in names]
    for p in doc["proposals"]:
        if p["id"] == "MX-1001":
            p["members"] += [{"username": u, "role": "member"} for u in names]
    catalogue.write_text(yaml.safe_dump(doc, sort_keys=False))
    return start_hub(site, extra_config=DAAS_TOKEN_ROLE), site


def vanilla_hub() -> tuple[Hub, Path]:
    site = make_world_dir("vanilla-burst-")
    (site / "homes").mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(16)
    cfg = site / "jupyterhub_config.py"
    cfg.write_text(VANILLA_CONFIG.format(
        url=url, hub_bind=f"http://127.0.0.1:{free_port()}", proxy_api=f"http://127.0.0.1:{free_port()}",
        db=f"sqlite:///{site / 'jupyterhub.sqlite'}", cookie=str(site / "cookie_secret"),
        homes=str(site / "homes"), args=["--allow-root"] if os.geteuid() == 0 else [],
    ))
    env = {**os.environ, "BENCH_TOKEN": token, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    env.pop("JUPYTERHUB_CRYPT_KEY", None)
    log = site / "hub.log"
    proc = subprocess.Popen([str(BIN / "jupyterhub"), "-f", str(cfg)], cwd=site, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    hub = Hub(url, token, site, proc, log)
    try:
        wait_until(lambda: requests.get(f"{url}/hub/health", timeout=2).ok, timeout=90, what="vanilla hub")
    except BaseException:
        stop_process(proc)
        raise
    return hub, site


def generated_token(hub: Hub) -> None:
    """Drive ``hub`` with a token it generated for ``bench-admin``, from now on (see the module)."""
    r = api(hub, "POST", "/users/bench-admin/tokens", json={"note": "burst benchmark", "expires_in": 3600})
    assert r.status_code == 201, r.text
    hub.token = r.json()["token"]


def api(hub: Hub, method: str, path: str, timeout: float = API_TIMEOUT, **kwargs) -> requests.Response:
    headers = {"Authorization": f"token {hub.token}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{hub.url}/hub/api{path}", headers=headers, timeout=timeout, **kwargs)


def ready_users(hub: Hub) -> set[str]:
    out, offset = set(), 0
    while True:
        r = api(hub, "GET", f"/users?state=ready&offset={offset}&limit=200", headers={"Accept": PAGE})
        r.raise_for_status()
        body = r.json()
        out |= {u["name"] for u in body["items"] if u.get("servers", {}).get("", {}).get("ready")}
        nxt = (body.get("_pagination") or {}).get("next")
        if not nxt:
            return out
        offset = nxt["offset"]


def active_users(hub: Hub) -> int:
    r = api(hub, "GET", "/users?state=active&limit=200", headers={"Accept": PAGE})
    return r.json()["_pagination"]["total"]


# -- what is measured while the burst runs
class Sampler:
    """Hub API latency (4/s) and the RSS of the hub's process tree (every 2 s), in threads."""

    def __init__(self, hub: Hub, probe_user: str):
        self.hub, self.probe = hub, probe_user
        self.latencies: list[float] = []
        self.timeouts = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._api, daemon=True),
                         threading.Thread(target=self._memory, daemon=True)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(API_TIMEOUT + 5)

    def _api(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                api(self.hub, "GET", f"/users/{self.probe}")
                self.latencies.append(time.monotonic() - t0)
            except requests.Timeout:
                self.timeouts += 1
            except requests.RequestException:
                self.timeouts += 1
            self._stop.wait(max(0.0, 0.25 - (time.monotonic() - t0)))

    def _memory(self):
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, tree_rss(self.hub.proc.pid))
            self._stop.wait(2)


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def reachable(hub: Hub, names: list[str]) -> int:
    def one(u):
        try:
            r = requests.get(f"{hub.url}/user/{u}/api", timeout=30)
            return r.status_code == 200 and "version" in r.json()
        except (requests.RequestException, ValueError):
            return False

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return sum(pool.map(one, names))


def burst(hub: Hub, names: list[str], *, limit: float) -> dict:
    """Fire every start together; wait until all are ready or failed (bounded by ``limit``)."""
    r = api(hub, "POST", "/users", json={"usernames": names})
    assert r.status_code in (201, 409), r.text
    failed: dict[str, str] = {}
    ready_at: dict[str, float] = {}

    def post(u):
        try:
            r = api(hub, "POST", f"/users/{u}/server", json={}, timeout=300)
            if r.status_code not in (201, 202):
                failed[u] = f"{r.status_code} {r.text[:200]}"
        except requests.RequestException as e:
            failed[u] = type(e).__name__

    with Sampler(hub, names[0]) as sampler:
        t0 = time.monotonic()
        pool = concurrent.futures.ThreadPoolExecutor(len(names))
        for u in names:
            pool.submit(post, u)
        while time.monotonic() - t0 < limit:
            try:
                now = ready_users(hub)
            except requests.RequestException:
                now = set()
            for u in now - ready_at.keys():
                ready_at[u] = time.monotonic() - t0
            if len(ready_at) + len(failed.keys() - ready_at.keys()) >= len(names):
                break
            if time.monotonic() - t0 > 20:
                for u in set(names) - ready_at.keys() - failed.keys():  # failed after the POST answered
                    model = api(hub, "GET", f"/users/{u}").json()
                    if not model.get("pending") and "" not in model.get("servers", {}):
                        failed[u] = "stopped without becoming ready"
            time.sleep(0.5)
        pool.shutdown(wait=True)
    all_ready = max(ready_at.values()) if len(ready_at) == len(names) else float("nan")
    result = {
        "ready": len(ready_at), "failed": len(failed.keys() - ready_at.keys()),
        "reachable": reachable(hub, sorted(ready_at)), "all_ready": all_ready,
        "ttr50": pct(list(ready_at.values()), 0.5), "ttr95": pct(list(ready_at.values()), 0.95),
        "api50": pct(sampler.latencies, 0.5), "api95": pct(sampler.latencies, 0.95),
        "apimax": max(sampler.latencies, default=float("nan")), "timeouts": sampler.timeouts,
        "peak_gb": sampler.peak_rss / 2**30, "why": sorted(set(failed.values()))[:3],
    }
    t1 = time.monotonic()

    def delete(u):
        try:
            api(hub, "DELETE", f"/users/{u}/server", timeout=120)
        except requests.RequestException:
            pass

    with concurrent.futures.ThreadPoolExecutor(len(names)) as stoppers:
        list(stoppers.map(delete, names))
    try:
        wait_until(lambda: active_users(hub) == 0, timeout=600, interval=1, what="all stopped")
        result["stopped"] = time.monotonic() - t1
    except TimeoutError:
        result["stopped"] = float("nan")
    return result


def sessions(pid: int) -> list[psutil.Process]:
    out = []
    for p in tree(pid):
        try:
            if "-singleuser" in " ".join(p.cmdline() or []):  # jupyterhub- or daas-hub-singleuser
                out.append(p)
        except psutil.Error:  # gone, or a zombie
            pass
    return out


def single_start(hub: Hub, user: str) -> dict:
    """One session alone: CPU seconds of its start, peak RSS while starting, RSS after 10 s idle."""
    before = {p.pid for p in sessions(hub.proc.pid)}
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            for p in sessions(hub.proc.pid):
                if p.pid not in before:
                    try:
                        peak[0] = max(peak[0], sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]))
                    except psutil.Error:
                        pass
            stop.wait(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    api(hub, "POST", f"/users/{user}/server", json={})
    wait_until(lambda: user in ready_users(hub), timeout=300, interval=0.25, what=f"{user} ready")
    stop.set()
    t.join()
    (proc,) = [p for p in sessions(hub.proc.pid) if p.pid not in before]
    cpu = proc.cpu_times()
    cpu_s = cpu.user + cpu.system + cpu.children_user + cpu.children_system
    time.sleep(10)
    steady = proc.memory_info().rss
    api(hub, "DELETE", f"/users/{user}/server")
    wait_until(lambda: active_users(hub) == 0, timeout=120, interval=0.5, what="stopped")
    return {"cpu_s": cpu_s, "peak_mb": peak[0] / 2**20, "steady_mb": steady / 2**20}


HEAD = (f"{'N':>4} {'hub':8} {'ready':>5} {'failed':>6} {'reach':>5} {'all-ready s':>11} {'ttr p50/p95 s':>14} "
        f"{'API p50/p95/max s':>19} {'t/o':>4} {'peak GB':>7} {'stop s':>6}")


def row(n: int, kind: str, r: dict) -> str:
    return (f"{n:>4} {kind:8} {r['ready']:>5} {r['failed']:>6} {r['reachable']:>5} {r['all_ready']:>11.1f} "
            f"{r['ttr50']:>6.1f}/{r['ttr95']:<7.1f} {r['api50']:>5.2f}/{r['api95']:5.2f}/{r['apimax']:<6.2f} "
            f"{r['timeouts']:>4} {r['peak_gb']:>7.2f} {r['stopped']:>6.1f}")


def run(kind: str, n: int, single: bool) -> tuple[dict, dict | None]:
    hub, site = daas_hub(n) if kind == "daas-hub" else vanilla_hub()
    try:
        generated_token(hub)
        names = users(n)
        result = burst(hub, names, limit=900)
        one = single_start(hub, names[0]) if single else None
        return result, one
    finally:
        stop_process(hub.proc, timeout=120)
        shutil.copy(hub.log, Path("/tmp") / f"burst-{kind}-{n}.log")
        shutil.rmtree(site, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100])
    ap.add_argument("--only", choices=["daas-hub", "vanilla"], help="one hub only (no ratios)")
    ap.add_argument("--smoke", action="store_true", help="N = 2, one round (make test)")
    args = ap.parse_args()
    sizes = [2] if args.smoke else args.sizes
    kinds = [args.only] if args.only else ["daas-hub", "vanilla"]
    print(f"load before: {load()} ({os.cpu_count()} cores)", flush=True)
    results: dict[tuple[int, str], dict] = {}
    singles: dict[str, dict] = {}
    for i, n in enumerate(sizes):
        for kind in kinds:
            results[n, kind], one = run(kind, n, single=(i == 0))
            if one:
                singles[kind] = one
            print(row(n, kind, results[n, kind]), flush=True)
    print()
    print(HEAD)
    for (n, kind), r in results.items():
        print(row(n, kind, r))
        if r["why"]:
            print(f"{'':14}failures: {'; '.join(r['why'])}")
    if len(kinds) == 2:
        print("\nratios daas-hub / vanilla")
        for n in sizes:
            a, b = results[n, "daas-hub"], results[n, "vanilla"]
            print(f"{n:>4}  all-ready {a['all_ready'] / b['all_ready']:.2f}x   API p95 "
                  f"{a['api95'] / b['api95']:.2f}x   API max {a['apimax'] / b['apimax']:.2f}x   "
                  f"peak memory {a['peak_gb'] / b['peak_gb']:.2f}x")
    print("\none session alone: start CPU-s, peak RSS of the start (MB), RSS after 10 s idle (MB)")
    for kind, s in singles.items():
        print(f"  {kind:8}  {s['cpu_s']:.2f} CPU-s   peak {s['peak_mb']:.0f} MB   steady {s['steady_mb']:.0f} MB")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
