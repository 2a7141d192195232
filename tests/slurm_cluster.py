"""A real single-node Slurm cluster on loopback, for tests and benchmarks.

Debian's slurm-wlm and munge (requirements/apt-slurm.txt), started by hand as
root (no systemd): munged (reused when one already answers), slurmctld and
slurmd on free loopback ports with a generated slurm.conf. One fake GPU
(gres ``gpu`` backed by /dev/null). ``SlurmdParameters=config_overrides`` lets
the node announce more CPUs than the machine has, so that many small jobs run
at once on a 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MUNGE_SOCKET_DIR = Path("/run/munge")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> str | None:
    """None if a cluster can be started here, else why not."""
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "squeue"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin"):
            return f"{tool} is not installed (requirements/apt-slurm.txt; `make test` installs it)"
    return None


@dataclass
class Cluster:
    folder: Path
    conf: Path
    node: str
    procs: dict = field(default_factory=dict)

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    def squeue(self) -> list[list[str]]:
        out = self.run("squeue", "-h", "-o", "%i|%T|%j|%u|%C|%m|%b|%l|%P").stdout
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def log(self, name: str) -> str:
        p = self.folder / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- controller outage, for the grace-period test
    def stop_controller(self) -> None:
        _stop(self.procs.pop("slurmctld", None))

    def start_controller(self) -> None:
        self.procs["slurmctld"] = _spawn(["slurmctld", "-D", "-f", str(self.conf)], self.folder / "slurmctld.out")
        _wait(lambda: self.run("scontrol", "ping", check=False).stdout.count("UP") > 0, 60, "slurmctld to answer")

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            _stop(self.procs.pop(name, None))


def _spawn(cmd: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=out.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Slurm test cluster: {what} not reached in {timeout} s")


def _munge_works() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True).stdout
        subprocess.run(["unmunge"], input=cred, capture_output=True, timeout=10, check=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def _memory_mb() -> int:
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    for tok in out.split():
        if tok.startswith("RealMemory="):
            return int(int(tok.split("=", 1)[1]) * 0.9)
    return 4096


SLURM_CONF = """\
ClusterName=daastest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoInAddrAny
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/slurmd.%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
GresTypes=gpu
ReturnToService=2
SlurmdTimeout=300
MessageTimeout=5
InactiveLimit=0
KillWait=5
MinJobAge=30
MaxJobCount=20000
NodeName={node} CPUs={cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={mem} NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes={node} Default=NO MaxTime=2:00:00 State=UP
"""


def start_cluster(folder: Path, *, cpus: int = 8) -> Cluster:
    """Write the configuration under ``folder`` and start the daemons; bounded waits."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    (folder / "state").mkdir(exist_ok=True)
    node = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(SLURM_CONF.format(
        node=node, ctld_port=free_port(), slurmd_port=free_port(), d=folder, cpus=cpus, mem=_memory_mb(),
    ))
    conf.chmod(0o644)
    (folder / "gres.conf").write_text("Name=gpu File=/dev/null\n")
    (folder / "gres.conf").chmod(0o644)
    cluster = Cluster(folder, conf, node)
    try:
        if not _munge_works():
            subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", str(MUNGE_SOCKET_DIR)],
                           check=True)
            if not Path("/etc/munge/munge.key").exists():
                subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True)
            cluster.procs["munged"] = _spawn(["runuser", "-u", "munge", "--", "munged", "-F"],
                                             folder / "munged.out")
            _wait(_munge_works, 30, "munged to answer")
        cluster.start_controller()
        cluster.procs["slurmd"] = _spawn(["slurmd", "-D", "-f", str(conf)], folder / "slurmd.out")
        _wait(lambda: cluster.run("sinfo", "-h", "-n", node, "-o", "%T", check=False).stdout.strip()
              in ("idle", "mixed", "allocated"), 90, "the node to be idle")
    except BaseException:
        cluster.stop()
        raise
    return cluster
