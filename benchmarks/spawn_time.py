"""Spawn time through the daas spawner vs the bare child spawner: same run, same backend.

Two real hubs (JupyterHub + configurable-http-proxy) on two copies of the demo
site: one with ``spawner_class = "daas"`` (form, validation, quota, child
LocalSpawner), one with the bare ``daas-local`` LocalSpawner. Spawns alternate
between the hubs; each is timed from the REST API's POST to the server being
ready, then stopped. Prints the median and the spread.

    <prefix>/venv/bin/python benchmarks/spawn_time.py [--runs 5] [--smoke]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import make_world_dir, start_hub, stop_process  # noqa: E402


def timed_spawn(hub, user: str, body) -> float:
    t0 = time.monotonic()
    r = hub.api("POST", f"/users/{user}/server", json=body) if body is not None else hub.api("POST", f"/users/{user}/server")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(user, timeout=180)
    elapsed = time.monotonic() - t0
    hub.stop_server(user)
    return elapsed


def main() -> None:
    from daas_hub.demo import ensure_demo_site

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="one run (make test)")
    args = ap.parse_args()
    if args.smoke:
        args.runs = 1
    sites, hubs = [], {}
    try:
        for kind, extra in (("daas (wrapper + LocalSpawner)", []),
                            ("bare LocalSpawner", ["--JupyterHub.spawner_class=daas-local"])):
            site = make_world_dir("daas-bench-site-")
            sites.append(site)
            ensure_demo_site(site)
            hubs[kind] = start_hub(site, extra_args=extra)
            hubs[kind].login("bob")  # creates the user and its auth_state
        times = {kind: [] for kind in hubs}
        for _ in range(args.runs):
            for kind, hub in hubs.items():
                body = {"proposal": "MX-1001", "profile": "python"} if kind.startswith("daas") else None
                times[kind].append(timed_spawn(hub, "bob", body))
        print(f"spawn to ready, local backend, {args.runs} runs each, alternating (seconds)")
        for kind, ts in times.items():
            print(f"  {kind:32s} median {statistics.median(ts):6.2f}  min {min(ts):6.2f}  max {max(ts):6.2f}")
        a, b = (statistics.median(ts) for ts in times.values())
        print(f"  overhead of the wrapper (median difference): {a - b:+.2f} s")
    finally:
        for hub in hubs.values():
            stop_process(hub.proc, timeout=60)
        for site in sites:
            shutil.rmtree(site, ignore_errors=True)


if __name__ == "__main__":
    main()
