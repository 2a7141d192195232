"""Every benchmark has a smoke run here (smallest size, one round), so it keeps working.

The figures are printed, never asserted (performance goals live in benchmarks/).
"""

from __future__ import annotations

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


def test_usage_report_smoke():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/usage_report.py"), "--smoke"],
                       capture_output=True, text=True, timeout=600, cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = [line for line in r.stdout.splitlines() if line.split() and line.split()[0] == "1000"]
    assert len(row.split()) == 4, row
