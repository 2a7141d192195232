"""Container images: size of each, and time for the session base to start JupyterLab.

For every ``localhost/daas-hub/NAME:VERSION`` image present (build them with
``make images``), prints its size. Then starts the base image ``--rounds`` times as an
arbitrary uid/gid (``podman run --user 4711:4712``, as the image tests do) running
``jupyter lab`` on a free loopback port, and times from ``podman run`` to the first
``200`` of ``/api/status`` and of ``/lab``; prints median, min and max.

    <venv>/bin/python benchmarks/image_start.py [--rounds 5] [--image localhost/daas-hub/base:0.1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import free_port, stop_process, wait_until  # noqa: E402

ENV = {**os.environ, "CONTAINERS_CONF": str(REPO / "images" / "containers.conf")}
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def podman(*args) -> str:
    return subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, check=True).stdout


def sizes(prefix: str) -> None:
    print(f"image sizes ({prefix}/NAME:{VERSION}, podman image inspect)")
    names = subprocess.run([str(REPO / "images" / "build.sh"), "list"], env=ENV, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in names:
        ref = f"{prefix}/{name}:{VERSION}"
        r = subprocess.run(["podman", "image", "inspect", ref], env=ENV, capture_output=True, text=True)
        if r.returncode:
            print(f"  {name:16} not built")
            continue
        print(f"  {name:16} {json.loads(r.stdout)[0]['Size'] / 1e6:7.0f} MB")


def start_once(image: str) -> tuple[float, float]:
    port, token, name = free_port(), secrets.token_hex(16), f"daas-bench-{secrets.token_hex(4)}"
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"token {token}"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["podman", "run", "--rm", "--name", name, "--network", "host", "--user", "4711:4712",
         "-e", "NB_USER=alice", image, "jupyter", "lab", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_until(lambda: requests.get(f"{url}/api/status", headers=headers, timeout=2).ok,
                   timeout=120, interval=0.05, what="/api/status")
        api = time.monotonic() - t0
        wait_until(lambda: requests.get(f"{url}/lab", headers=headers, timeout=5).ok,
                   timeout=60, interval=0.05, what="/lab")
        lab = time.monotonic() - t0
    finally:
        subprocess.run(["podman", "stop", "--ignore", "-t", "10", name], env=ENV, capture_output=True)
        stop_process(proc)
    return api, lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prefix", default="localhost/daas-hub")
    parser.add_argument("--image", default=None, help="default: PREFIX/base:VERSION")
    args = parser.parse_args()
    sizes(args.prefix)
    image = args.image or f"{args.prefix}/base:{VERSION}"
    runs = [start_once(image) for _ in range(args.rounds)]
    print(f"\n{image}: podman run to JupyterLab answering, as uid 4711, {args.rounds} runs (seconds)")
    for label, values in (("/api/status", [r[0] for r in runs]), ("/lab page", [r[1] for r in runs])):
        print(f"  {label:12} median {statistics.median(values):6.2f}  min {min(values):6.2f}  max {max(values):6.2f}")


if __name__ == "__main__":
    main()
