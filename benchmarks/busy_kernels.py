"""The hub's API latency while kernels compute in local sessions: kernels at their session's priority vs not.

Two real hubs (JupyterHub + configurable-http-proxy) on the demo site, local
backend, run side by side in the same run:

- ``daas-hub``: the shipped settings; sessions load the server extension
  :mod:`daas_hub.spawners.kernels`, so each kernel's autogroup gets the session's
  autogroup nice value (``LocalSpawner.session_nice``, 10).
- ``off``: the same, with that extension switched off the way Jupyter switches a
  server extension off: ``{"daas_hub.spawners.kernels": false}`` in the sessions' own
  config folder, given as ``JUPYTER_CONFIG_DIR`` by ``c.Spawner.environment`` (as
  benchmarks/visitor_requests.py does). Kernels then start in new autogroups at nice 0,
  jupyter_client's default.

Each hub runs ``--sessions`` sessions (alice, bob, carol). Per round and per hub
in turn: ``--kernels`` K kernels are started through the sessions' REST API
(round-robin over the sessions) and each runs ``while True: pass`` (sent over its
ZMQ channels with jupyter_client); after 2 s, ``--requests`` ``GET /hub/api/users``
with an admin token go to the hub through the proxy, one after the other, 20 ms
apart (after 5 untimed ones); then the kernels are shut down (and killed by PID if still there). The same
is measured with no kernel first (``idle``). Printed per hub and case: latency
p50/p95/max in ms over all rounds, the kernels' autogroup nice values (from
``/proc/<pid>/autogroup``) and the hub process's CPU seconds per run. The load
average is printed before and after. Figures are printed, never asserted.

    <prefix>/venv/bin/python benchmarks/busy_kernels.py [--kernels 4] [--sessions 2] [--requests 200]
                                                        [--rounds 2] [--smoke]

``--smoke``: 1 kernel, 1 session, 10 requests, one round (``tests/test_benchmarks.py`` runs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from figures import load, pct  # noqa: E402

from conftest import Hub, start_demo_hub, stop_process, wait_until  # noqa: E402

KINDS = ("daas-hub", "off")
USERS = ("alice", "bob", "carol")
GAP = 0.02
WARM_UP = 5
SETTLE = 2.0


def start(kind: str) -> tuple[Hub, Path]:
    off = ("daas_hub.spawners.kernels",) if kind == "off" else ()
    return start_demo_hub(f"busy-kernels-{kind}-", extensions_off=off)


def autogroup_nice(pid: int) -> str:
    from daas_hub.spawners.kernels import autogroup_nice as read

    nice = read(pid)
    return "-" if nice is None else str(nice)


class Bench:
    """One hub, its sessions, and the kernels of one case."""

    def __init__(self, kind: str, sessions: int):
        self.kind = kind
        self.hub, self.site = start(kind)
        self.users = USERS[:sessions]
        self.kernels: list[tuple[str, str, psutil.Process]] = []  # (user, kernel id, process)
        for user in self.users:
            self.hub.api("POST", f"/users/{user}")
            r = self.hub.api("POST", f"/users/{user}/server", json={})
            if r.status_code not in (201, 202):
                raise RuntimeError(f"{kind}: {user}'s session did not start: {r.status_code} {r.text[:300]}")
        for user in self.users:
            self.hub.wait_ready(user, timeout=300)

    def kernel_process(self, user: str, kernel_id: str) -> psutil.Process | None:
        for p in psutil.Process(self.hub.proc.pid).children(recursive=True):
            try:
                if kernel_id in " ".join(p.cmdline()) and p.environ().get("JUPYTERHUB_USER") == user:
                    return p
            except psutil.Error:
                continue
        return None

    def start_busy_kernels(self, count: int) -> list[str]:
        """``count`` kernels, each running ``while True: pass``; their autogroup nice values."""
        from jupyter_client import BlockingKernelClient

        for n in range(count):
            user = self.users[n % len(self.users)]
            r = self.hub.server_api(user, "POST", "/kernels", json={"name": "python3"})
            if r.status_code != 201:
                raise RuntimeError(f"{self.kind}: no kernel for {user}: {r.status_code} {r.text[:300]}")
            kid = r.json()["id"]
            proc = wait_until(lambda u=user, k=kid: self.kernel_process(u, k), timeout=60, what="the kernel")
            self.kernels.append((user, kid, proc))
        for _user, _kid, proc in self.kernels:
            cmd = proc.cmdline()
            connection_file = cmd[cmd.index("-f") + 1]
            client = BlockingKernelClient(connection_file=connection_file)
            client.load_connection_file()
            client.start_channels()
            try:
                client.wait_for_ready(timeout=60)
                client.execute("while True: pass")
            finally:
                client.stop_channels()
        return [autogroup_nice(p.pid) for _u, _k, p in self.kernels]

    def stop_kernels(self) -> None:
        for user, kid, proc in self.kernels:
            try:
                self.hub.server_api(user, "DELETE", f"/kernels/{kid}")
            except requests.RequestException:
                pass
            try:
                proc.wait(10)
            except psutil.TimeoutExpired:
                proc.kill()
            except psutil.Error:
                pass
        self.kernels = []

    def measure(self, count: int) -> dict:
        hub = psutil.Process(self.hub.proc.pid)
        cpu0 = sum(hub.cpu_times()[:2])
        lat = []
        with requests.Session() as s:
            s.headers["Authorization"] = f"token {self.hub.token}"
            for _ in range(WARM_UP):
                s.get(f"{self.hub.url}/hub/api/users", timeout=60).raise_for_status()
            for _ in range(count):
                t0 = time.perf_counter()
                r = s.get(f"{self.hub.url}/hub/api/users", timeout=60)
                lat.append(time.perf_counter() - t0)
                r.raise_for_status()
                time.sleep(GAP)
        return {"lat": lat, "hub_cpu": sum(hub.cpu_times()[:2]) - cpu0}

    def close(self) -> None:
        try:
            self.stop_kernels()
            if self.hub.proc.poll() is None:
                self.hub.stop_all_servers()
        finally:
            stop_process(self.hub.proc, timeout=60)
            shutil.rmtree(self.site, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", type=int, default=4, help="busy kernels per case (K)")
    ap.add_argument("--sessions", type=int, default=2, choices=range(1, len(USERS) + 1))
    ap.add_argument("--requests", type=int, default=200, help="timed GET /hub/api/users per case and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="1 kernel, 1 session, 10 requests, 1 round")
    args = ap.parse_args()
    if args.smoke:
        args.kernels, args.sessions, args.requests, args.rounds = 1, 1, 10, 1
    print(f"load before: {load()} ({os.cpu_count()} cores); K={args.kernels} busy kernels in "
          f"{args.sessions} session(s), {args.requests} requests x {args.rounds} rounds, {GAP * 1000:.0f} ms apart")
    benches: dict[str, Bench] = {}
    runs: dict[tuple[str, str], list[dict]] = {}
    nices: dict[str, set[str]] = {kind: set() for kind in KINDS}
    try:
        for kind in KINDS:
            benches[kind] = Bench(kind, args.sessions)
        for _ in range(args.rounds):
            for kind, bench in benches.items():
                runs.setdefault((kind, "idle"), []).append(bench.measure(args.requests))
                nices[kind] |= set(bench.start_busy_kernels(args.kernels))
                try:
                    time.sleep(SETTLE)
                    runs.setdefault((kind, f"{args.kernels} busy"), []).append(bench.measure(args.requests))
                finally:
                    bench.stop_kernels()
    finally:
        for bench in benches.values():
            bench.close()
    print(f"{'hub':9} {'case':8} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'hub CPU-s':>9}  kernel autogroup nice")
    for (kind, case), rs in runs.items():
        lat = [x * 1000 for r in rs for x in r["lat"]]
        cpu = sum(r["hub_cpu"] for r in rs) / len(rs)
        nice = ",".join(sorted(nices[kind])) if case != "idle" else "-"
        print(f"{kind:9} {case:8} {pct(lat, 0.5):>7.1f} {pct(lat, 0.95):>7.1f} {max(lat):>7.1f} {cpu:>9.2f}  {nice}")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
