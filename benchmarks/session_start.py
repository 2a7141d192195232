"""What one session start costs, lever by lever (daas-hub-singleuser, docs/local-backend.md).

Starts JupyterLab's server alone (no hub: ``jupyter lab`` on a free loopback port,
a fresh home, this venv and its extensions) until ``/api`` answers, and prints the
median over ``--runs`` of: wall seconds, CPU seconds (the server and the child
processes it waited for), peak RSS of its process tree while starting, RSS 2 s
after, and which child processes it ran. Variants: as installed; each lever of
:mod:`daas_hub.spawners.singleuser` alone; all of them (what sessions run).

    <prefix>/venv/bin/python benchmarks/session_start.py [--runs 5] [--smoke]

``--smoke``: one run of the first and last variants (``tests/test_benchmarks.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import free_port  # noqa: E402

BIN = Path(sys.executable).parent
NO_LSP = "--ServerApp.jpserver_extensions={'jupyter_lsp': False}"
LAZY_H5WEB = "--ServerApp.jpserver_extensions={'jupyterlab_h5web': False, 'daas_hub.lazy_h5web': True}"
LAUNCH = ("import sys; from daas_hub.spawners import singleuser as s; {prepare}; "
          "from jupyterlab.labapp import main; sys.argv[0] = 'jupyter-lab'; sys.exit(main())")
VARIANTS = {
    "as installed": ("", ()),
    "no node at import": ("cm = s.path_without_node(); cm.__enter__(); import jupyterlab.labapp; "
                          "cm.__exit__(None, None, None)", ()),
    "no language-server scan": ("", (NO_LSP,)),
    "no IRI grammar": ("sys.modules['rfc3987_syntax'] = None", ()),
    "HDF5 endpoints deferred": ("", (LAZY_H5WEB,)),
    "all (daas-hub-singleuser)": ("s.prepare()", ("{session_args}",)),
}


def one(prepare: str, args: tuple[str, ...], *, tries: int = 3) -> dict:
    """One start; a server that exits at once (its free port taken meanwhile by another
    process) is tried again on another port, up to ``tries`` times."""
    for attempt in range(tries):
        try:
            return _one(prepare, args)
        except ServerExited:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


class ServerExited(RuntimeError):
    pass


def _one(prepare: str, args: tuple[str, ...]) -> dict:
    port, home = free_port(), tempfile.mkdtemp(prefix="session-start-", dir="/var/tmp")
    code = LAUNCH.format(prepare=prepare or "pass")
    if "{session_args}" in args:
        from daas_hub.spawners.singleuser import session_args

        args = session_args(h5web=True)  # the benchmark measures the deferred HDF5 endpoints
    cmd = [sys.executable, "-c", code, "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           "--ServerApp.token=", *(["--allow-root"] if os.geteuid() == 0 else []), *args]
    env = {**os.environ, "HOME": home, "PATH": os.pathsep.join([str(BIN), "/usr/local/bin", "/usr/bin", "/bin"])}
    t0 = time.monotonic()
    log = Path(home) / "server.log"
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    root, seen, peak = psutil.Process(proc.pid), set(), 0
    try:
        while True:
            if proc.poll() is not None:
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
                raise ServerExited(f"the server exited with {proc.returncode}: {tail}")
            try:
                kids = root.children(recursive=True)
                seen |= {" ".join(k.cmdline()[:2]) for k in kids}
                peak = max(peak, sum(p.memory_info().rss for p in [root, *kids]))
            except psutil.Error:
                pass
            try:
                if requests.get(f"http://127.0.0.1:{port}/api", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - t0 > 180:
                raise TimeoutError("no answer in 180 s")
            time.sleep(0.05)
        wall = time.monotonic() - t0
        time.sleep(2)
        cpu = root.cpu_times()
        return {"wall": wall, "cpu": cpu.user + cpu.system + cpu.children_user + cpu.children_system,
                "peak": peak / 2**20, "rss": root.memory_info().rss / 2**20,
                "children": sorted(Path(c.split()[0]).name + " " + " ".join(c.split()[1:2])
                                 for c in seen if c.split())}  # a child that already exited has no cmdline
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="one run, first and last variants (make test)")
    args = ap.parse_args()
    names = list(VARIANTS)
    if args.smoke:
        names, args.runs = [names[0], names[-1]], 1
    print(f"load before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores); median of {args.runs} runs")
    print(f"{'variant':28} {'wall s':>6} {'CPU-s':>6} {'peak MB':>7} {'RSS MB':>6}  child processes")
    for name in names:
        runs = [one(*VARIANTS[name]) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "cpu", "peak", "rss")}
        kids = sorted(set().union(*(r["children"] for r in runs)))
        print(f"{name:28} {med['wall']:>6.2f} {med['cpu']:>6.2f} {med['peak']:>7.0f} {med['rss']:>6.0f}  "
              f"{', '.join(kids) or '-'}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
