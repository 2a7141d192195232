"""Desktops that never outlive their session's server, however it ends.

Two parts:

- **The guard** (``python -m daas_hub.proxies.lifetime -- vncserver ...``): each
  desktop's command runs under it. The guard asks the kernel for a signal when its
  parent, the session's server, dies (``PR_SET_PDEATHSIG``: this also fires when the
  server is SIGKILLed or OOM-killed), starts the desktop in a process group of its
  own, and on that signal, on SIGTERM (a normal stop) or when the desktop exits, ends
  the whole group: SIGTERM, then SIGKILL after :data:`GRACE` seconds. Every process of
  the desktop also carries :data:`MARK_ENV` (the server's pid and start time).
- **The reaper** (:func:`reap_orphans`), run when the next server of the session
  starts: it ends processes of the same account whose mark names a server that is
  gone, for anything that left the group (``setsid``) and outlived a guard that was
  itself SIGKILLed.

:func:`orphans` is the pure rule; the rest is I/O.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

#: ``<server pid>:<server start time>`` in every desktop process's environment
MARK_ENV = "DAAS_HUB_DESKTOP_OF"
#: seconds between SIGTERM and SIGKILL when a desktop is ended
GRACE = 3.0
_PR_SET_PDEATHSIG = 1


def guard_prefix() -> list[str]:
    """The command prefix that runs a desktop under the guard (this session's Python)."""
    return [sys.executable, "-m", "daas_hub.proxies.lifetime", "--"]


def start_time(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat), None if gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def mark_for(pid: int) -> str:
    return f"{pid}:{start_time(pid)}"


@dataclass(frozen=True)
class Process:
    pid: int
    mark: str  # the value of MARK_ENV, "" if none
    cmd: str


def orphans(processes: Iterable[Process], *, alive: Callable[[str], bool], own: Iterable[int] = ()) -> list[Process]:
    """The processes whose mark names a server that is gone; pure.

    ``alive(mark)`` says whether the server a mark names still runs (same pid,
    same start time, so a reused pid does not count). ``own``: pids never returned
    (the caller and its parents).
    """
    own = set(own)
    return [p for p in processes if p.mark and p.pid not in own and not alive(p.mark)]


def server_alive(mark: str, proc: Path = Path("/proc")) -> bool:
    pid, _, started = mark.partition(":")
    if not pid.isdigit():
        return False
    return start_time(int(pid), proc) == started


def marked_processes(uid: int, proc: Path = Path("/proc")) -> list[Process]:
    """Processes of ``uid`` with a desktop mark, read from /proc."""
    found = []
    prefix = f"{MARK_ENV}=".encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
            mark = next((e[len(prefix):].decode() for e in env if e.startswith(prefix)), "")
            if not mark:
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append(Process(int(entry.name), mark, cmd[:200]))
    return found


def reap_orphans(uid: int | None = None) -> list[tuple[int, str]]:
    """End this account's desktop processes whose server is gone; (pid, command) of each."""
    uid = os.getuid() if uid is None else uid
    me = {os.getpid(), os.getppid()}
    gone = orphans(marked_processes(uid), alive=server_alive, own=me)
    for p in gone:
        _signal(p.pid, signal.SIGKILL)
    return [(p.pid, p.cmd) for p in gone]


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _end_group(child: subprocess.Popen, mark: str) -> None:
    """SIGTERM the desktop's group, SIGKILL what is left after GRACE, then any marked straggler."""
    _signal(child.pid, signal.SIGTERM, group=True)
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline:
        if child.poll() is not None and not _group_alive(child.pid):
            break
        time.sleep(0.1)
    _signal(child.pid, signal.SIGKILL, group=True)
    for p in marked_processes(os.getuid()):
        if p.mark == mark and p.pid != os.getpid():
            _signal(p.pid, signal.SIGKILL)
    try:
        child.wait(2)
    except subprocess.TimeoutExpired:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m daas_hub.proxies.lifetime -- COMMAND...", file=sys.stderr)
        return 2
    server = os.getppid()
    ended = []

    def on_signal(signum, frame):
        ended.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        print(f"daas-hub desktop guard: prctl failed (errno {ctypes.get_errno()})", file=sys.stderr)
        return 1
    if os.getppid() != server:  # the server died before the request took effect
        return 1
    mark = mark_for(server)
    env = {**os.environ, MARK_ENV: mark}
    child = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        while not ended and child.poll() is None:
            time.sleep(0.2)
    finally:
        _end_group(child, mark)
    return child.returncode if child.returncode is not None and child.returncode >= 0 else 0


if __name__ == "__main__":
    sys.exit(main())
