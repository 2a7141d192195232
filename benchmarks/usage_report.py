"""How long the operations store takes for what the hub and the admins ask of it.

Fills a fresh store with N sessions (a year of a busy facility is ~50,000), then
times: recording one more session (requested, started, 10 polls, ended: what
the hub writes per session), the metrics scrape's query (open sessions), and
`daas-hub usage` for a month, per proposal.

    python benchmarks/usage_report.py [--sizes 1000 10000 50000] [--smoke]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from daas_hub.usage import OperationsStore, usage_report

T0 = 1_800_000_000.0
GIB = 1024**3
MONTH = (T0 + 90 * 86400, T0 + 120 * 86400)


def fill(store: OperationsStore, n: int) -> None:
    rng = random.Random(n)
    con = store._connect()  # bulk insert in one transaction (the hub writes one row at a time)
    with con:
        for i in range(n):
            start = T0 + rng.uniform(0, 365 * 86400)
            open_ = i % 200 == 0
            con.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (f"r{i}", f"user{i % 400}", "", f"P-{i % 300}", "python", "slurm", "", rng.choice([2, 4, 8]),
                 8 * GIB, rng.choice([0, 0, 1]), 4, "running" if open_ else "ended", "", start - 30, start,
                 start + 3600, None if open_ else start + rng.uniform(600, 14400)))


def timed(fn, rounds: int) -> float:
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - t0) / rounds * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    ap.add_argument("--smoke", action="store_true", help="smallest size, one round")
    args = ap.parse_args()
    sizes, rounds = ([1000], 1) if args.smoke else (args.sizes, 5)
    print(f"{'sessions':>9} {'record one (ms)':>16} {'open sessions (ms)':>19} {'month report (ms)':>18}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            store = OperationsStore(Path(d) / "ops.sqlite")
            fill(store, n)

            counter = iter(range(10**9))

            def one(store=store, counter=counter):
                rid = f"bench{next(counter)}"
                store.requested(rid, user="u", server="", proposal="P-1", profile="python", backend="slurm",
                                course="", cpu=4, memory=8 * GIB, gpu=0, hours=4, now=T0)
                store.started(rid, T0 + 10)
                for i in range(10):
                    store.seen(rid, T0 + 40 + 30 * i)
                store.ended(rid, T0 + 400)

            record = timed(one, rounds)
            scrape = timed(lambda s=store: s.sessions(open_only=True), rounds)
            report = timed(lambda s=store: usage_report(s.sessions(since=MONTH[0], until=MONTH[1]), *MONTH, "proposal"),
                           rounds)
            print(f"{n:>9} {record:>16.1f} {scrape:>19.1f} {report:>18.1f}")


if __name__ == "__main__":
    main()
