"""Every benchmark has a smoke run here (smallest size, one round), so it keeps working.

The figures are printed, never asserted (performance goals live in benchmarks/).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import slurm_cluster
from conftest import REPO


def test_squeue_polls_smoke():
    why = slurm_cluster.available()
    if why:
        pytest.skip(f"no Slurm test cluster: {why}")
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/squeue_polls.py"), "--smoke"],
                       capture_output=True, text=True, timeout=600, cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = [line for line in r.stdout.splitlines() if line.split() and line.split()[0] == "10"]
    assert len(row.split()) == 8, row  # N, pending stock/daas, running stock/daas, stops "a / b"


def run_smoke(script: str, timeout: float = 900) -> str:
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--smoke"],
                       capture_output=True, text=True, timeout=timeout, cwd="/")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_session_start_smoke():
    out = run_smoke("session_start.py")
    assert "as installed" in out and "all (daas-hub-singleuser)" in out


@pytest.mark.hub
def test_burst_smoke():
    """Both hubs, N = 2: every start ready and reachable (figures printed, not asserted)."""
    out = run_smoke("burst.py")
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["2"]
            and line.split()[1] in ("daas-hub", "vanilla")]
    assert sorted(r[1] for r in rows) == ["daas-hub", "daas-hub", "vanilla", "vanilla"], out  # as run, in the table
    for r in rows:
        assert r[2:5] == ["2", "0", "2"], out  # ready, failed, reachable
    assert "ratios daas-hub / vanilla" in out and "one session alone" in out


@pytest.mark.hub
def test_visitor_requests_smoke():
    """Both hubs, alice's session shared with bob: a row per hub, person, sign-in and mode, and the ratios
    (figures printed, not asserted)."""
    out = run_smoke("visitor_requests.py", timeout=600)
    rows = [line.split() for line in out.splitlines()
            if line.split()[:1] in (["daas-hub"], ["vanilla"]) and len(line.split()) == 11]  # the table
    assert all(re.fullmatch(r"[\d.]+", x) for r in rows for x in r[4:]), out  # p50 .. hub asks/req
    cases = {(hub, who, auth, mode) for hub in ("daas-hub", "vanilla") for who in ("owner", "visitor")
             for auth in ("token", "cookie") for mode in ("seq", "x2")}
    assert sorted(tuple(r[:4]) for r in rows) == sorted(cases), out
    assert "ratios visitor / owner" in out and "ratios daas-hub / vanilla" in out, out


def test_proposal_lookup_smoke():
    out = run_smoke("proposal_lookup.py")
    assert "yaml cached" in out and "sql cached" in out


@pytest.mark.hub
def test_spawn_time_smoke():
    out = run_smoke("spawn_time.py")
    assert "overhead of the wrapper" in out


@pytest.mark.hub
def test_desktop_first_frame_smoke():
    """Login lands on the spawn form; the benchmark starts the session from it."""
    out = run_smoke("desktop_first_frame.py")
    assert re.search(r"^daas-hub\s+[\d.]+", out, re.M) and re.search(r"^vanilla\s+[\d.]+", out, re.M), out


def test_usage_report_smoke():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/usage_report.py"), "--smoke"],
                       capture_output=True, text=True, timeout=600, cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = [line for line in r.stdout.splitlines() if line.split() and line.split()[0] == "1000"]
    assert len(row.split()) == 4, row


@pytest.mark.hub
def test_busy_kernels_smoke():
    """Both hubs, one busy kernel each: an idle and a busy row per hub (figures printed, not
    asserted; the kernels' autogroup nice values are what tests/test_kernels.py checks)."""
    out = run_smoke("busy_kernels.py", timeout=600)
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["daas-hub"], ["off"])]
    assert sorted(r[1] for r in rows) == ["1", "1", "idle", "idle"], out  # "1 busy" splits in two
    assert all(re.fullmatch(r"[\d.]+", x) for r in rows for x in r[-5:-1]), out  # p50 .. hub CPU-s
