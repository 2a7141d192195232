"""Time from opening the desktop URL to the first picture on the noVNC canvas.

Runs a real JupyterHub + configurable-http-proxy on the demo site (in a fresh
folder), signs in as a sample user in Debian's headless Chromium, waits for
JupyterLab, then opens ``/user/<name>/desktop/`` and times:

- ``connected``: noVNC says "Connected";
- ``first frame``: the canvas shows more than one colour (a window is drawn).

Each is measured cold (each of three users' first open starts Xvnc, openbox and
the programs) and warm (Xvnc already running); medians are printed. Side by side: daas-hub's desktop entry, and vanilla
jupyter-remote-desktop-proxy 3.x (its own ``/bin/sh -c`` entry, with the same
xstartup so both draw the same windows). Target: first frame < 2 s.

    <venv>/bin/python benchmarks/desktop_first_frame.py [--rounds 3] [--smoke]

``--smoke``: one user, one warm open, both variants (``tests/test_benchmarks.py`` runs it).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import make_world_dir, start_hub, stop_process  # noqa: E402

USERS = ("alice", "bob", "carol")
COLOURS = """() => {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i+1] << 8) | d[i+2]);
  return seen.size;
}"""


def open_desktop(page, url: str, timeout: float = 60) -> tuple[float, float]:
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_function("document.getElementById('status') && "
                           "document.getElementById('status').textContent === 'Connected'", timeout=timeout * 1000)
    connected = time.perf_counter() - t0
    page.wait_for_function("(" + COLOURS + ")() > 1", timeout=timeout * 1000, polling=20)
    return connected, time.perf_counter() - t0


def measure(browser, hub, user: str, rounds: int) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.click(f"#daas-login-{user}")
    page.wait_for_selector("#daas-options", timeout=60_000)  # login lands on the spawn form, prefilled
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url(re.compile(rf".*/user/{user}/lab.*"), timeout=180_000)
    page.wait_for_selector(".jp-LauncherCard", timeout=180_000)
    url = f"{hub.url}/user/{user}/desktop/"
    cold = open_desktop(page, url)
    warm = []
    for _ in range(rounds):
        page.goto("about:blank")
        warm.append(open_desktop(page, url))
    context.close()
    hub.stop_server(user)
    return {"cold": [cold], "warm": warm}


def run(variant: str, rounds: int, browser, users=USERS) -> dict:
    from daas_hub.demo import ensure_demo_site

    site = make_world_dir(f"daas-hub-bench-{variant}-")
    ensure_demo_site(site)
    extra = []
    if variant == "vanilla":
        # our extension off for the desktop: jupyter-remote-desktop-proxy's own entry serves it,
        # with the same xstartup (openbox and an xterm)
        import daas_hub.proxies

        xstartup = Path(daas_hub.proxies.__file__).parent / "xstartup"
        extra = [f"--LocalSpawner.environment=JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP={xstartup}",
                 "--LocalSpawner.args=--DesktopApps.full_desktop=False"]
    hub = start_hub(site, extra_args=extra)
    try:
        result = {"cold": [], "warm": []}
        for user in users:  # each user's first open is a cold start
            r = measure(browser, hub, user, rounds)
            result["cold"] += r["cold"]
            result["warm"] += r["warm"]
        return result
    finally:
        stop_process(hub.proc, timeout=60)
        shutil.rmtree(site, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="warm opens per variant")
    parser.add_argument("--smoke", action="store_true", help="one user, one warm open (make test)")
    args = parser.parse_args()
    users = USERS[:1] if args.smoke else USERS
    if args.smoke:
        args.rounds = 1
    from playwright.sync_api import sync_playwright

    results = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        for variant in ("daas-hub", "vanilla"):
            results[variant] = run(variant, args.rounds, browser, users)
        browser.close()

    print("\ndesktop: opening /user/<name>/desktop/ until the picture (seconds; target first frame < 2 s)")
    print(f"{'variant':<10} {'cold connected':>15} {'cold frame':>11} {'warm connected':>15} {'warm frame':>11}")
    for variant, r in results.items():
        cc, cf = (statistics.median(x[i] for x in r["cold"]) for i in (0, 1))
        wc, wf = (statistics.median(x[i] for x in r["warm"]) for i in (0, 1))
        print(f"{variant:<10} {cc:>15.2f} {cf:>11.2f} {wc:>15.2f} {wf:>11.2f}")
    print(f"(medians: cold of {len(users)} first opens, which start Xvnc, openbox and the programs; "
          f"warm of {len(users) * args.rounds})")


if __name__ == "__main__":
    main()
