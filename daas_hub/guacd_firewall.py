"""guacd reachable by the VM gateway's account only: an owner-match firewall rule.

guacd has no client authentication: whoever connects chooses the machine, the
protocol and guacd-side parameters (``recording-path``, ``drive-path``, ...). On one
host, guacd listens on ``127.0.0.1:<port>`` and this rule rejects every local
connection to that port that does not come from the gateway's account (the
``owner`` match of iptables, OUTPUT chain, loopback interface)::

    daas-hub guacd-firewall --port 4822 --allow daas-vmgw          # add (idempotent)
    daas-hub guacd-firewall --port 4822 --allow daas-vmgw --remove

:func:`rule` is the pure builder; :func:`apply` and :func:`remove` run iptables.
"""

from __future__ import annotations

import shutil
import subprocess

COMMENT = "daas-hub: guacd {port} for uid {uid} only"


def rule(port: int, uid: int) -> list[str]:
    """The iptables rule specification (without the chain operation); pure."""
    return ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", str(port), "-m", "owner", "!", "--uid-owner", str(uid),
            "-m", "comment", "--comment", COMMENT.format(port=port, uid=uid),
            "-j", "REJECT", "--reject-with", "tcp-reset"]


class FirewallError(RuntimeError):
    pass


def _iptables() -> str:
    path = shutil.which("iptables", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not path:
        raise FirewallError("iptables is not installed (Debian package iptables): guacd would be open to "
                            "every local account")
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([_iptables(), "-w", "10", *args], capture_output=True, text=True, timeout=30)


def present(port: int, uid: int) -> bool:
    return _run(["-C", *rule(port, uid)]).returncode == 0


def apply(port: int, uid: int) -> None:
    """Add the rule first in OUTPUT, unless it is there already."""
    if present(port, uid):
        return
    spec = rule(port, uid)
    done = _run(["-I", spec[0], "1", *spec[1:]])
    if done.returncode != 0:
        raise FirewallError(f"iptables refused the rule for guacd's port {port}: {done.stderr.strip()}")


def remove(port: int, uid: int) -> None:
    while present(port, uid):
        done = _run(["-D", *rule(port, uid)])
        if done.returncode != 0:
            raise FirewallError(f"iptables could not remove the rule for guacd's port {port}: "
                                f"{done.stderr.strip()}")
