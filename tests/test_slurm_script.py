"""Pure builders of the Slurm backend: the job script and the sinfo summary (no cluster)."""

from __future__ import annotations

import pytest

from daas_hub.options import SessionRequest
from daas_hub.profiles import load_catalogue

slurm = pytest.importorskip("daas_hub.spawners.slurm")

PROFILE = load_catalogue().get("diffraction")


def spec(**changes):
    base = dict(
        job_name="daas-hub", hub_user="alice", home="/homes/alice", output="/homes/alice/.log-%j",
        export=("HOME", "JUPYTERHUB_API_TOKEN"), partition="", account="", qos="",
        request=SessionRequest("MX-1001", "diffraction", "slurm", 2, 3 * 1024**3, 0, 1.5),
        profile=PROFILE, bind_address="127.0.0.1", command=("/v/bin/daas-hub-session", "/v/bin/jupyterhub-singleuser"),
    )
    return slurm.JobSpec(**{**base, **changes})


def test_simplest_job_script():
    assert slurm.render_job_script(spec()) == """\
#!/bin/bash
# daas-hub session daas-hub for alice: proposal MX-1001, profile diffraction
#SBATCH --job-name=daas-hub
#SBATCH --chdir=/homes/alice
#SBATCH --output=/homes/alice/.log-%j
#SBATCH --export=HOME,JUPYTERHUB_API_TOKEN
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=3072M
#SBATCH --time=90

set -eu
export HOME=/homes/alice
cd "$HOME"

# the profile's environment
module load pyfai/2026.9

# the single-user server listens on this node's address only
export DAAS_HUB_BIND_ADDRESS="127.0.0.1"
exec /v/bin/daas-hub-session /v/bin/jupyterhub-singleuser
"""


def test_partition_account_qos_gpus_and_extra_directives():
    r = SessionRequest(None, "diffraction", "slurm", 1, 1024**3, 1, 0.25)
    text = slurm.render_job_script(spec(partition="gpu", account="mx1001", qos="beamtime", request=r,
                                        extra_directives=("--constraint=ib",)))
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=mx1001", "#SBATCH --qos=beamtime",
                 "#SBATCH --gres=gpu:1", "#SBATCH --time=15", "#SBATCH --constraint=ib", "proposal none"):
        assert line in text


@pytest.mark.parametrize("field", ["partition", "account", "qos", "job_name"])
def test_names_with_shell_or_newlines_are_refused(field):
    with pytest.raises(ValueError, match=field):
        slurm.render_job_script(spec(**{field: "x\n#SBATCH --uid=0"}))


def test_home_with_spaces_is_quoted():
    assert "#SBATCH --chdir='/homes/a b'" in slurm.render_job_script(spec(home="/homes/a b"))


def test_sinfo_summary_sums_node_states_per_partition():
    text = "debug*|up|2/6/0/8|20000|gpu:1\ndebug*|up|0/8/0/8|1000|gpu:1\nbatch|up|0/8/0/8|21000|(null)\n"
    assert slurm.parse_sinfo(text) == [
        slurm.PartitionFree("debug*", "up", 14, 16, 21000, "gpu:1"),
        slurm.PartitionFree("batch", "up", 8, 8, 21000, "(null)"),
    ]
