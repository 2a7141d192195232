"""squeue calls per interval with N Slurm sessions, pending and running: daas-hub vs stock batchspawner.

Runs a real single-node Slurm (tests/slurm_cluster.py, as root) and submits N
small jobs named like daas-hub sessions, held (``--hold``: pending in the queue).

- pending: every session waits in ``start()`` (batchspawner's loop: its job-status
  hook every ``startup_poll_interval``, 0.5 s) and shows ``progress()`` (once a
  second); per start interval (daas-hub: ``squeue_start_interval``).
- running: the jobs are released; every session's ``poll()`` once per poll
  interval, spread over it, as the hub's jittered callbacks do.

A counting ``squeue`` shim first on PATH counts every call. Prints one line per N.
``--smoke``: the smallest size, one round (``tests/test_benchmarks.py`` runs it).

    <prefix>/venv/bin/python benchmarks/squeue_polls.py [--sizes 10 50 150] [--interval 3] [--rounds 5] [--smoke]
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


async def pending_rounds(spawners, kind: str, seconds: float) -> None:
    """Each session as in start(): its job-status hook every 0.5 s, and progress() read once a second."""

    async def waiting(i, sp):
        await asyncio.sleep(0.5 * i / len(spawners))
        for _ in range(int(seconds / 0.5)):
            await sp.query_job_status()
            await asyncio.sleep(0.5)

    async def watching(sp):
        events = sp.progress()
        try:
            for _ in range(int(seconds)):
                await asyncio.wait_for(events.__anext__(), 2)
        except (TimeoutError, StopAsyncIteration):
            pass
        finally:
            await events.aclose()

    tasks = [waiting(i, sp) for i, sp in enumerate(spawners)]
    if kind == "daas":  # stock progress() reads no squeue of its own
        tasks += [watching(sp) for sp in spawners]
    await asyncio.gather(*tasks)


def make_spawners(kind: str, job_ids: list[str], interval: float, start_interval: float):
    user = SimpleNamespace(name="bench", url="/user/bench/")
    if kind == "stock":
        from batchspawner import SlurmSpawner

        return [SlurmSpawner(user=user, job_id=j, exec_prefix="", req_username="daas-demo", req_homedir="/tmp",
                             req_keepvars="", poll_interval=int(interval)) for j in job_ids]
    from daas_hub.spawners.slurm import SlurmSpawner

    return [SlurmSpawner(user=user, job_id=j, poll_interval=int(interval), squeue_interval=0.9 * interval,
                         squeue_start_interval=start_interval) for j in job_ids]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 150])
    ap.add_argument("--interval", type=float, default=3.0, help="poll interval in seconds (hub default: 30)")
    ap.add_argument("--start-interval", type=float, default=2.0, help="daas-hub's squeue_start_interval")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="the smallest size, one round (make test)")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.rounds = [min(args.sizes)], 1
    why = slurm_cluster.available()
    if why:
        sys.exit(f"cannot run: {why}")
    folder = Path(tempfile.mkdtemp(prefix="daas-bench-slurm-", dir="/var/tmp"))
    folder.chmod(0o755)  # the jobs' accounts read slurm.conf under it
    cluster = slurm_cluster.start_cluster(folder / "cluster", cpus=max(args.sizes) + 10)
    os.environ["SLURM_CONF"] = str(cluster.conf)
    counter = counting_shim(folder)
    os.environ["PATH"] = f"{folder}:{os.environ['PATH']}"
    print(f"squeue calls per interval (poll interval {args.interval:g} s, start interval {args.start_interval:g} s, "
          f"{args.rounds} rounds: calls / intervals), real Slurm, one node")
    print(f"{'N':>5} {'pending: stock':>15} {'daas-hub':>9} {'running: stock':>15} {'daas-hub':>9}"
          "   running jobs reported stopped (stock / daas-hub)")
    try:
        for n in args.sizes:
            ids = []
            for _ in range(n):
                out = cluster.run("sbatch", "--parsable", "--hold", "--job-name=daas-hub", "-c", "1", "--mem=4M",
                                  "-o", "/dev/null", "--uid=daas-demo", "--gid=daas-demo", "--wrap", "sleep 900")
                ids.append(out.stdout.strip())
            pending = []
            for kind in ("stock", "daas"):
                spawners = make_spawners(kind, ids, args.interval, args.start_interval)
                before = calls(counter)
                asyncio.run(pending_rounds(spawners, kind, args.start_interval * args.rounds))
                pending.append((calls(counter) - before) / args.rounds)
            cluster.run("scontrol", "release", ",".join(ids))
            slurm_cluster._wait(lambda n=n: sum(1 for j in cluster.squeue() if j[1] == "RUNNING") >= n, 60,
                                f"{n} jobs running")
            running, stops = [], []
            for kind in ("stock", "daas"):
                spawners = make_spawners(kind, ids, args.interval, args.start_interval)
                before = calls(counter)
                stops.append(asyncio.run(poll_rounds(spawners, args.interval, args.rounds)))
                # every spawner polled once per round, i.e. once per poll interval
                running.append((calls(counter) - before) / args.rounds)
            print(f"{n:>5} {pending[0]:>15.1f} {pending[1]:>9.1f} {running[0]:>15.1f} {running[1]:>9.1f}"
                  f"   {stops[0]} / {stops[1]}", flush=True)
            for j in ids:
                cluster.run("scancel", j, check=False)
            slurm_cluster._wait(lambda: not cluster.squeue(), 120, "jobs gone")
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
