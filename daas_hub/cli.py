"""``daas-hub``: run the demo and check a site's settings.

    daas-hub demo [--dir DIR] [--url URL] [--config FILE] [--regenerate]
    daas-hub check [SETTINGS_FILE] [--live]
    daas-hub status [--settings FILE]
    daas-hub usage --from DATE --to DATE [--by proposal|user|course] [--csv] [--settings FILE]
    daas-hub proposals USER [--settings FILE] [--provider NAME] [--email EMAIL] [--no-cache]
    daas-hub guacd-firewall --port PORT --allow ACCOUNT [--remove]
    daas-hub provenance RECORD [--settings FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .config import DEFAULT_DEMO_DIR, DEMO_DIR_ENV, check_site
from .errors import SettingsError
from .model import Provider
from .settings import SETTINGS_ENV, load_settings

_DEMO_CONFIG = '''# Written by `daas-hub demo`: the hub's configuration is the site settings file.
from daas_hub.config import configure_hub

configure_hub(c)
'''


def cmd_demo(args) -> int:
    from .demo import ensure_demo_site

    folder = Path(args.dir).resolve()
    settings_file = ensure_demo_site(folder, hub_url=args.url, force=args.regenerate)
    config = Path(args.config).resolve() if args.config else folder / "jupyterhub_config.py"
    if not args.config:
        config.write_text(_DEMO_CONFIG)
    jupyterhub = shutil.which("jupyterhub", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not jupyterhub:
        print("daas-hub demo: jupyterhub is not installed; install daas-hub[demo]", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env[SETTINGS_ENV] = str(settings_file)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    print(f"daas-hub demo: site in {folder}; hub on {args.url} (Ctrl-C stops it)", flush=True)
    os.chdir(folder / "hub")
    os.execve(jupyterhub, [jupyterhub, "-f", str(config), *args.jupyterhub_args], env)


def cmd_check(args) -> int:
    path = args.settings or os.environ.get(SETTINGS_ENV)
    if not path:
        print(f"daas-hub check: name a settings file or set {SETTINGS_ENV}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(path)
        source, catalogue = check_site(settings)
    except SettingsError as e:
        print(f"daas-hub check: {e}", file=sys.stderr)
        return 1
    if args.live:
        return _check_live(path, settings)
    print(f"{path}: OK")
    print(f"  facility:  {settings.facility_name}")
    where = settings.source_path or (settings.source_options or {}).get("url") or ""
    print(f"  proposals: {settings.source_kind} ({where})")
    print(f"  profiles:  {', '.join(catalogue.slugs)}")
    print(f"  login:     {settings.login_kind}{' (demo mode)' if settings.demo else ''}")
    print(f"  backend:   {settings.backend}")
    return 0


def _check_live(path: str, settings) -> int:
    """One line per integration, tried for real; exit 0 only if all pass (docs/operations.md#doctor)."""
    from .doctor import run_checks

    print(f"{path}: settings OK; trying each integration")
    checks = run_checks(settings)
    for c in checks:
        print(c.line(), flush=True)
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _store(args):
    from .usage import OperationsStore, store_path

    if args.store:
        return OperationsStore(args.store)
    path = args.settings or os.environ.get(SETTINGS_ENV)
    if not path:
        raise SettingsError(f"${SETTINGS_ENV}", "(environment)", "no settings file",
                            f"name one with --settings, set {SETTINGS_ENV}, or give --store")
    return OperationsStore(store_path(load_settings(path).data_dir))


def cmd_status(args) -> int:
    import time

    from .usage import format_status, status

    try:
        store = _store(args)
    except SettingsError as e:
        print(f"daas-hub status: {e}", file=sys.stderr)
        return 2
    print(format_status(status(store.sessions(open_only=True)), time.time()), end="")
    return 0


def cmd_usage(args) -> int:
    from .usage import format_report, parse_time, usage_report

    try:
        start = parse_time(args.start, what="--from")
        end = parse_time(args.end, what="--to")
        store = _store(args)
    except (ValueError, SettingsError) as e:
        print(f"daas-hub usage: {e}", file=sys.stderr)
        return 2
    if end <= start:
        print("daas-hub usage: --to must be after --from", file=sys.stderr)
        return 2
    rows = usage_report(store.sessions(since=start, until=end), start, end, args.by)
    print(format_report(rows, args.by, as_csv=args.csv), end="")
    return 0


def cmd_proposals(args) -> int:
    """What the configured source answers for one person, with timings."""
    import asyncio
    import time

    from .errors import SourceUnavailable
    from .model import Identity, UnsafeValue
    from .sources import is_stale
    from .sources.factory import build_source

    path = args.settings or os.environ.get(SETTINGS_ENV)
    if not path:
        print(f"daas-hub proposals: name a settings file with --settings or set {SETTINGS_ENV}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(path)
        entry = dict(settings.source_options or {"kind": settings.source_kind, "path": settings.source_path})
        if args.no_cache:
            entry["cache"] = {**entry.get("cache", {}), "enabled": False}
        source = build_source(entry)
        source.check()
    except SettingsError as e:
        print(f"daas-hub proposals: {e}", file=sys.stderr)
        return 1
    default = Provider.UMBRELLA if args.subject else Provider.FACILITY
    provider = Provider(args.provider) if args.provider else default
    identity = Identity(provider=provider, subject=args.subject or args.user, username=args.user,
                        email=args.email)

    async def lookup():
        try:
            t0 = time.perf_counter()
            account = await source.resolve_account(identity)
            t1 = time.perf_counter()
            proposals = await source.proposals_for(account) if account else []
            t2 = time.perf_counter()
            return account, proposals, (t1 - t0) * 1000, (t2 - t1) * 1000
        finally:
            await source.close()

    print(f"source:   {entry['kind']} (settings {path})")
    print(f"identity: provider={identity.provider} subject={identity.subject} username={identity.username}"
          f" email={identity.email}")
    try:
        account, proposals, t_account, t_proposals = asyncio.run(lookup())
    except SourceUnavailable as e:
        print(f"daas-hub proposals: the catalogue did not answer: {e}", file=sys.stderr)
        return 3
    except UnsafeValue as e:
        print(f"account:  the catalogue's {e}\n  (the login would be refused)")
        return 1
    print(f"account:  {t_account:.1f} ms")
    if account is None:
        print("  (no account is linked to this identity: the login would be refused)")
        return 1
    print(f"  username={account.username} uid={account.uid} gid={account.gid} roles={','.join(sorted(account.roles))}"
          f" email={account.email} name={account.display_name!r}")
    print(f"proposals: {len(proposals)} in {t_proposals:.1f} ms{' (STALE: catalogue unavailable)' if is_stale(proposals) else ''}")
    for p in proposals:
        role = p.role_of(account.username)
        sessions = ", ".join(f"{b.start:%Y-%m-%d}..{b.end:%Y-%m-%d}" for b in p.beamtimes) or "no beamtime"
        print(f"  {p.id}  [{p.state.value}] {p.instrument}  role={role.value if role else '-'}  {p.title}")
        print(f"      beamtimes: {sessions}")
        print(f"      raw: {_data_path(p.data.raw)}  processed: {_data_path(p.data.processed)}")
    return 0


def _data_path(path: str | None) -> str:
    """A proposal's data folder as ``daas-hub proposals`` prints it, flagged when missing here."""
    if not path:
        return "-"
    if not os.path.isdir(path):
        return f"{path} (MISSING on this machine: sessions show a notice instead of the folder)"
    return path


def cmd_guacd_firewall(args) -> int:
    import pwd

    from . import guacd_firewall

    try:
        uid = pwd.getpwnam(args.allow).pw_uid
    except KeyError:
        print(f"daas-hub guacd-firewall: there is no account {args.allow!r} (create the VM gateway's account "
              f"first, docs/desktops.md)", file=sys.stderr)
        return 2
    try:
        (guacd_firewall.remove if args.remove else guacd_firewall.apply)(args.port, uid)
    except guacd_firewall.FirewallError as e:
        print(f"daas-hub guacd-firewall: {e}", file=sys.stderr)
        return 1
    what = "removed" if args.remove else "in place"
    print(f"guacd on port {args.port}: the rule admitting only {args.allow} (uid {uid}) is {what}")
    return 0


def cmd_provenance(args) -> int:
    import json

    from .profiles import load_catalogue
    from .provenance import describe

    try:
        record = json.loads(Path(args.record).read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a provenance record (expected a JSON object)")
    except (OSError, ValueError) as e:
        print(f"daas-hub provenance: cannot read {args.record}: {e}", file=sys.stderr)
        return 2
    path = args.settings or os.environ.get(SETTINGS_ENV)
    try:
        catalogue = load_catalogue(load_settings(path).profile_catalogue if path else None)
    except SettingsError as e:
        print(f"daas-hub provenance: {e}", file=sys.stderr)
        return 2
    lines, changed = describe(record, catalogue)
    print("\n".join(lines))
    return 1 if changed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="daas-hub", description="Data Analysis as a Service hub")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate the demo facility and run a hub on it")
    demo.add_argument("--dir", default=os.environ.get(DEMO_DIR_ENV, DEFAULT_DEMO_DIR),
                      help=f"demo folder (default {DEFAULT_DEMO_DIR})")
    demo.add_argument("--url", default="http://127.0.0.1:8000", help="where the hub listens")
    demo.add_argument("--config", help="jupyterhub_config.py to use (default: a generated one)")
    demo.add_argument("--regenerate", action="store_true", help="write the demo folder anew")
    demo.add_argument("jupyterhub_args", nargs="*", help="extra jupyterhub options, after --")
    demo.set_defaults(func=cmd_demo)
    check = sub.add_parser("check", help="check a site settings file and what it points at")
    check.add_argument("settings", nargs="?", help=f"settings file (default ${SETTINGS_ENV})")
    check.add_argument("--live", action="store_true",
                       help="also try each integration for real (IdPs, catalogue, Slurm, storage, crypt key, guacd)")
    check.set_defaults(func=cmd_check)
    stat = sub.add_parser("status", help="sessions per backend, proposal and profile; pending spawns; quota use")
    stat.add_argument("--settings", help=f"settings file (default ${SETTINGS_ENV})")
    stat.add_argument("--store", help="the operations store file (default: <hub.data_dir>/daas-operations.sqlite)")
    stat.set_defaults(func=cmd_status)
    usage = sub.add_parser("usage", help="CPU-, GPU- and session-hours per proposal, user or course")
    usage.add_argument("--from", dest="start", required=True, help="start of the period, e.g. 2025-03-01 (UTC)")
    usage.add_argument("--to", dest="end", required=True, help="end of the period (exclusive), e.g. 2025-04-01")
    usage.add_argument("--by", choices=("proposal", "user", "course"), default="proposal", help="group by (default proposal)")
    usage.add_argument("--csv", action="store_true", help="CSV instead of a table")
    usage.add_argument("--settings", help=f"settings file (default ${SETTINGS_ENV})")
    usage.add_argument("--store", help="the operations store file (default: <hub.data_dir>/daas-operations.sqlite)")
    usage.set_defaults(func=cmd_usage)
    props = sub.add_parser("proposals", help="show what the proposal source answers for one person")
    props.add_argument("user", help="the facility username (or any name, with --subject)")
    props.add_argument("--settings", help=f"settings file (default ${SETTINGS_ENV})")
    props.add_argument("--provider", choices=[p.value for p in Provider], help="login provider of the identity (default: facility, or umbrella with --subject)")
    props.add_argument("--subject", help="the identity provider's subject, e.g. an UmbrellaID")
    props.add_argument("--email", help="the email the identity provider released")
    props.add_argument("--no-cache", action="store_true", help="ask the catalogue directly, bypassing the cache")
    props.set_defaults(func=cmd_proposals)
    fw = sub.add_parser("guacd-firewall", help="let only the VM gateway's account connect to guacd (iptables, root)")
    fw.add_argument("--port", type=int, required=True, help="guacd's port on 127.0.0.1")
    fw.add_argument("--allow", required=True, help="the VM gateway's account")
    fw.add_argument("--remove", action="store_true", help="remove the rule")
    fw.set_defaults(func=cmd_guacd_firewall)
    prov = sub.add_parser("provenance", help="show a session's provenance record and its start-again link")
    prov.add_argument("record", help="a record from <processed>/.daas-hub/provenance/")
    prov.add_argument("--settings", help=f"settings file, for its profile catalogue (default ${SETTINGS_ENV})")
    prov.set_defaults(func=cmd_provenance)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
