"""Proposal lookup latency: SQL and YAML sources, cold and cached.

    <venv>/bin/python benchmarks/proposal_lookup.py [--users 20000] [--proposals 100000] [--samples 500] [--smoke]

Builds a synthetic facility (each proposal has 3 members, so a user is on ~15
proposals with one beamtime each), then times a login's lookup
(``resolve_account`` + ``proposals_for``) for ``--samples`` random users:

- ``sql baseline``: the same two queries with psycopg alone (no daas-hub), the
  floor for the SQL source;
- ``sql cold``: SqlProposalSource, each user's first lookup (connections pooled);
- ``yaml cold``: YamlProposalSource, each user's first lookup (file already loaded);
- ``... cached``: the same users again through CachedProposalSource.

PostgreSQL is Debian's, in a throwaway cluster on a free loopback port (as in
the tests), stopped at the end. Prints p50/p95/max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from postgres_server import PostgresServer, pg_bindir  # noqa: E402

from daas_hub.model import Identity  # noqa: E402
from daas_hub.sources import CachedProposalSource, SqlProposalSource, YamlProposalSource  # noqa: E402

ACCOUNT_QUERY = ("SELECT login AS username, uid, gid, roles, full_name AS display_name, email FROM users "
                 "WHERE (:provider = 'umbrella' AND umbrella_id = :subject) "
                 "OR (:provider <> 'umbrella' AND login = :username)")
PROPOSALS_QUERY = ("SELECT p.code AS id, p.title, p.beamline AS instrument, p.status AS state, m.role, "
                   "b.starts AS start, b.ends AS \"end\" FROM proposals p "
                   "JOIN members m ON m.proposal_id = p.id LEFT JOIN beamtimes b ON b.proposal_id = p.id "
                   "WHERE m.login = :username")
ROLES = ("principal_investigator", "member", "member")


def facility(users: int, proposals: int, seed: int = 4):
    rng = random.Random(seed)
    logins = [f"user{i:05d}" for i in range(users)]
    props = []
    for i in range(proposals):
        members = rng.sample(logins, 3)
        day = 1 + i % 28
        props.append((f"P-{i:06d}", f"Proposal {i}", f"ID{i % 30:02d}", members,
                      f"2026-{1 + i % 12:02d}-{day:02d}T08:00:00+00:00", f"2026-{1 + i % 12:02d}-{day:02d}T20:00:00+00:00"))
    return logins, props


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"p50 {statistics.median(ms):8.2f} ms   p95 {p95:8.2f} ms   max {ms[-1]:8.2f} ms"


async def time_lookups(source, names: list[str]) -> list[float]:
    out = []
    for name in names:
        t0 = time.perf_counter()
        account = await source.resolve_account(Identity("facility", name, username=name))
        proposals = await source.proposals_for(account)
        out.append(time.perf_counter() - t0)
        assert proposals, name
    return out


def setup_postgres(logins, props) -> PostgresServer:
    server = PostgresServer(pg_bindir()).start()
    server.psql("CREATE DATABASE uo")
    server.psql("""
        CREATE TABLE users (login text PRIMARY KEY, uid int, gid int, umbrella_id text UNIQUE, email text,
                            full_name text, roles text[]);
        CREATE TABLE proposals (id int PRIMARY KEY, code text UNIQUE, title text, beamline text, status text);
        CREATE TABLE members (proposal_id int, login text, role text);
        CREATE TABLE beamtimes (proposal_id int, starts timestamptz, ends timestamptz);
        CREATE ROLE reader LOGIN PASSWORD 'reader';
        GRANT SELECT ON users, proposals, members, beamtimes TO reader;
    """, database="uo")
    server.copy_in("users", ((u, str(20000 + i), str(20000 + i), f"umb-{u}", f"{u}@example.org", u, "{user}")
                             for i, u in enumerate(logins)), database="uo")
    server.copy_in("proposals", ((str(i), p[0], p[1], p[2], "active") for i, p in enumerate(props)), database="uo")
    server.copy_in("members", ((str(i), m, ROLES[j]) for i, p in enumerate(props) for j, m in enumerate(p[3])),
                   database="uo")
    server.copy_in("beamtimes", ((str(i), p[4], p[5]) for i, p in enumerate(props)), database="uo")
    server.psql("CREATE INDEX ON members (login); CREATE INDEX ON beamtimes (proposal_id); ANALYZE;", database="uo")
    return server


def sql_baseline(server: PostgresServer, names: list[str]) -> list[float]:
    import psycopg

    out = []
    with psycopg.connect(host="127.0.0.1", port=server.port, user="reader", password="reader", dbname="uo") as conn:
        acct = ACCOUNT_QUERY.replace(":provider", "%(provider)s").replace(":subject", "%(subject)s").replace(
            ":username", "%(username)s")
        prop = PROPOSALS_QUERY.replace(":username", "%(username)s")
        for name in names:
            t0 = time.perf_counter()
            conn.execute(acct, {"provider": "facility", "subject": name, "username": name}).fetchall()
            rows = conn.execute(prop, {"username": name}).fetchall()
            out.append(time.perf_counter() - t0)
            assert rows
    return out


def write_yaml(path: Path, logins, props) -> None:
    with open(path, "w") as f:
        f.write("facility: BENCH\naccounts:\n")
        for i, u in enumerate(logins):
            f.write(f"  - {{username: {u}, uid: {20000 + i}, umbrella_id: umb-{u}}}\n")
        f.write("proposals:\n")
        for p in props:
            members = ", ".join(f"{{username: {m}, role: {'pi' if j == 0 else 'member'}}}" for j, m in enumerate(p[3]))
            f.write(f"  - id: {p[0]}\n    title: {p[1]}\n    instrument: {p[2]}\n    members: [{members}]\n"
                    f"    sessions: [{{start: '{p[4]}', end: '{p[5]}'}}]\n")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--proposals", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--skip-yaml", action="store_true")
    parser.add_argument("--skip-sql", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="200 users, 1000 proposals, 20 lookups (make test)")
    args = parser.parse_args()
    if args.smoke:
        args.users, args.proposals, args.samples = 200, 1000, 20
    logins, props = facility(args.users, args.proposals)
    names = random.Random(1).sample(logins, args.samples)
    print(f"{args.users} users, {args.proposals} proposals (3 members each), {args.samples} lookups per row")
    results = []
    if not args.skip_sql:
        t0 = time.perf_counter()
        server = setup_postgres(logins, props)
        print(f"  (PostgreSQL loaded in {time.perf_counter() - t0:.1f} s)")
        try:
            results.append(("sql baseline (psycopg, no daas-hub)", sql_baseline(server, names)))
            with tempfile.NamedTemporaryFile("w", suffix=".pw") as pw:
                pw.write("reader\n")
                pw.flush()
                sql = SqlProposalSource(url=server.url("reader", "uo"), password_file=pw.name,
                                        account_query=ACCOUNT_QUERY, proposals_query=PROPOSALS_QUERY)
                cache = CachedProposalSource(source=sql)
                results.append(("sql cold", await time_lookups(cache, names)))
                results.append(("sql cached", await time_lookups(cache, names)))
                await cache.close()
        finally:
            server.stop()
    if not args.skip_yaml:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "proposals.yaml"
            write_yaml(path, logins, props)
            yaml_source = YamlProposalSource(path=str(path))
            t0 = time.perf_counter()
            yaml_source.check()
            print(f"  (YAML file of {path.stat().st_size / 1e6:.1f} MB parsed and validated in "
                  f"{time.perf_counter() - t0:.1f} s, once per change of the file)")
            cache = CachedProposalSource(source=yaml_source)
            results.append(("yaml cold", await time_lookups(cache, names)))
            results.append(("yaml cached", await time_lookups(cache, names)))
    width = max(len(r[0]) for r in results)
    for label, samples in results:
        print(f"{label:<{width}}   {percentiles(samples)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
