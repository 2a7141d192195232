"""squeue calls per poll interval with N running Slurm sessions: daas-hub vs stock batchspawner.

Runs a real single-node Slurm (tests/slurm_cluster.py, as root), submits N small
jobs (``sbatch --wrap 'sleep ...'``, named like daas-hub sessions) and polls them
the way the hub does: every spawner once per interval, spread over the interval.
A counting ``squeue`` shim first on PATH counts every call. Prints one line per N.

    <prefix>/venv/bin/python benchmarks/squeue_polls.py [--sizes 10 50 150] [--interval 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import slurm_cluster  # noqa: E402


def counting_shim(folder: Path) -> Path:
    real = shutil.which("squeue")
    counter = folder / "squeue-calls"
    shim = folder / "squeue"
    shim.write_text(f'#!/bin/sh\necho x >> "{counter}"\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
    return counter


def calls(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


async def poll_rounds(spawners, interval: float, rounds: int) -> int:
    """Each spawner polls once per interval at its own offset, as the hub's jittered callbacks do.

    Returns how many running jobs were reported stopped (batchspawner #174 under load).
    """
    n = len(spawners)
    false_stops = 0

    async def one(i, sp):
        nonlocal false_stops
        await asyncio.sleep(interval * i / n)
        for _ in range(rounds):
            if await sp.poll() is not None:  # every job is running: a stop is a false alarm
                false_stops += 1
                return
            await asyncio.sleep(interval)

    await asyncio.gather(*(one(i, sp) for i, sp in enumerate(spawners)))
    return false_stops


def make_spawners(kind: str, job_ids: list[str], interval: float):
    user = SimpleNamespace(name="bench", url="/user/bench/")
    if kind == "stock":
        from batchspawner import SlurmSpawner

        return [SlurmSpawner(user=user, job_id=j, exec_prefix="", req_username="daas-demo", req_homedir="/tmp",
                             req_keepvars="", poll_interval=int(interval)) for j in job_ids]
    from daas_hub.spawners.slurm import SlurmSpawner

    return [SlurmSpawner(user=user, job_id=j, poll_interval=int(interval), squeue_interval=0.9 * interval)
            for j in job_ids]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 150])
    ap.add_argument("--interval", type=float, default=3.0, help="poll interval in seconds (hub default: 30)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    why = slurm_cluster.available()
    if why:
        sys.exit(f"cannot run: {why}")
    folder = Path(tempfile.mkdtemp(prefix="daas-bench-slurm-", dir="/var/tmp"))
    folder.chmod(0o755)  # the jobs' accounts read slurm.conf under it
    cluster = slurm_cluster.start_cluster(folder / "cluster", cpus=max(args.sizes) + 10)
    os.environ["SLURM_CONF"] = str(cluster.conf)
    counter = counting_shim(folder)
    os.environ["PATH"] = f"{folder}:{os.environ['PATH']}"
    print(f"squeue calls per poll interval (interval {args.interval:g} s, {args.rounds} rounds: calls / rounds), "
          "real Slurm, one node")
    print(f"{'N':>5} {'stock batchspawner':>20} {'daas-hub':>10}   running jobs reported stopped (stock / daas-hub)")
    try:
        for n in args.sizes:
            ids = []
            for _ in range(n):
                out = cluster.run("sbatch", "--parsable", "--job-name=daas-hub", "-c", "1", "--mem=4M",
                                  "-o", "/dev/null", "--uid=daas-demo", "--gid=daas-demo", "--wrap", "sleep 900")
                ids.append(out.stdout.strip())
            slurm_cluster._wait(lambda n=n: sum(1 for j in cluster.squeue() if j[1] == "RUNNING") >= n, 60,
                                f"{n} jobs running")
            row, stops = [], []
            for kind in ("stock", "daas"):
                spawners = make_spawners(kind, ids, args.interval)
                before = calls(counter)
                stops.append(asyncio.run(poll_rounds(spawners, args.interval, args.rounds)))
                # every spawner polled once per round, i.e. once per poll interval
                row.append((calls(counter) - before) / args.rounds)
            print(f"{n:>5} {row[0]:>20.1f} {row[1]:>10.1f}   {stops[0]} / {stops[1]}", flush=True)
            for j in ids:
                cluster.run("scancel", j, check=False)
            slurm_cluster._wait(lambda: not cluster.squeue(), 120, "jobs gone")
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
