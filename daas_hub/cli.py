"""``daas-hub``: run the demo and check a site's settings.

    daas-hub demo [--dir DIR] [--url URL] [--config FILE] [--regenerate]
    daas-hub check [SETTINGS_FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .config import DEFAULT_DEMO_DIR, DEMO_DIR_ENV, check_site
from .errors import SettingsError
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
    print(f"{path}: OK")
    print(f"  facility:  {settings.facility_name}")
    print(f"  proposals: {settings.source_kind} ({settings.source_path})")
    print(f"  profiles:  {', '.join(catalogue.slugs)}")
    print(f"  login:     {settings.login_kind}{' (demo mode)' if settings.demo else ''}")
    print(f"  backend:   {settings.backend}")
    return 0


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
    check.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
