"""Kernels run at their session's CPU priority (docs/local-backend.md, "A class starting at once").

The local backend starts each session below the hub's CPU priority
(``LocalBurst.session_nice``, :func:`~daas_hub.spawners.burst.lower_priority`): the
process's nice value and its Linux *autogroup*'s. jupyter_client starts every kernel
in a session of its own (``start_new_session=True``), which puts the kernel in a new
autogroup at nice 0: its process nice value, inherited, then only ranks it within
that group, and a busy kernel competes with the hub as an equal.

- :class:`SessionPriorityProvisioner`, jupyter_client's ``LocalProvisioner`` plus one
  step after the launch: the kernel's autogroup gets the session's own autogroup nice
  value (registered as ``daas-session-priority`` in the entry point group
  ``jupyter_client.kernel_provisioners``). A kernelspec naming its own provisioner keeps it.
- A Jupyter server extension (enabled by ``daas_hub_kernels.json`` in
  ``etc/jupyter/jupyter_server_config.d``) makes it the default provisioner of the
  session's kernels, unless the site has chosen one
  (``c.KernelProvisionerFactory.default_provisioner_name`` or
  ``JUPYTER_DEFAULT_PROVISIONER_NAME``).

Nothing changes where the session runs at nice 0, or on a kernel without autogroups
(``/proc/<pid>/autogroup`` does not exist; the kernel inherits the process nice value).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re

from jupyter_client.provisioning import KernelProvisionerFactory, LocalProvisioner

#: the name this provisioner is registered under (pyproject.toml)
PROVISIONER_NAME = "daas-session-priority"
#: where Linux shows a process's autogroup and its nice value (sched(7), "The autogroup feature")
PROC = "/proc"

_AUTOGROUP = re.compile(r"^/autogroup-\d+ nice (-?\d+)\s*$")


def parse_autogroup(text: str) -> int | None:
    """The nice value in the text of ``/proc/<pid>/autogroup`` (``/autogroup-123 nice 10``);
    None for anything else."""
    match = _AUTOGROUP.match(text)
    return int(match.group(1)) if match else None


def autogroup_path(pid: int | str, *, proc: str = PROC) -> str:
    return os.path.join(proc, str(pid), "autogroup")


def autogroup_nice(pid: int | str = "self", *, proc: str = PROC) -> int | None:
    """The autogroup nice value of process ``pid``; None without autogroups (no such file)."""
    try:
        with open(autogroup_path(pid, proc=proc)) as f:
            return parse_autogroup(f.read())
    except OSError:
        return None


async def set_autogroup_nice(pid: int, nice: int, *, proc: str = PROC, tries: int = 30,
                             interval: float = 0.1) -> None:
    """Write ``nice`` to ``/proc/<pid>/autogroup``. Raises ``OSError`` when it cannot.

    Without CAP_SYS_ADMIN, Linux accepts one autogroup change per 100 ms on the whole
    machine and answers EAGAIN to the others (kernel/sched/autogroup.c): tried again
    ``tries`` times, ``interval`` seconds apart.
    """
    for attempt in range(tries):
        try:
            with open(autogroup_path(pid, proc=proc), "w") as f:
                f.write(str(nice))
            return
        except OSError as e:
            if e.errno != errno.EAGAIN or attempt == tries - 1:
                raise
        await asyncio.sleep(interval)


class SessionPriorityProvisioner(LocalProvisioner):
    """A local kernel whose autogroup has the session's autogroup nice value (see the module)."""

    #: whether a failure was logged already (once per server: the next kernels fail alike)
    _failure_logged = False

    async def launch_kernel(self, cmd, **kwargs):
        info = await super().launch_kernel(cmd, **kwargs)
        await self.share_session_priority()
        return info

    async def share_session_priority(self) -> None:
        """Give the kernel's autogroup the session's nice value; never raises."""
        nice = autogroup_nice()
        if nice is None or nice <= 0 or not self.pid:
            return  # the session runs at normal priority, or there are no autogroups
        try:
            await set_autogroup_nice(self.pid, nice)
            self.log.debug("kernel %s (pid %s): autogroup nice %s, as its session's", self.kernel_id,
                           self.pid, nice)
        except OSError as e:
            if not self.__class__._failure_logged:
                self.__class__._failure_logged = True
                self.log.warning("kernel %s (pid %s) runs at a higher CPU priority than its session: its "
                                 "autogroup nice value could not be set to %s (%s)", self.kernel_id, self.pid,
                                 nice, e.strerror or e)


def site_provisioner(config, environ=os.environ) -> str | None:
    """The default provisioner the site chose (config or environment), or None."""
    section = config.get("KernelProvisionerFactory") if "KernelProvisionerFactory" in config else None
    if section is not None and "default_provisioner_name" in section:
        return section["default_provisioner_name"]
    return environ.get(KernelProvisionerFactory.default_provisioner_name_env) or None


def _jupyter_server_extension_points():
    return [{"module": "daas_hub.spawners.kernels"}]


def _load_jupyter_server_extension(serverapp):
    chosen = site_provisioner(serverapp.config)
    if chosen:
        serverapp.log.info("daas-hub: kernels start with the site's provisioner %s", chosen)
        return
    serverapp.config.KernelProvisionerFactory.default_provisioner_name = PROVISIONER_NAME
    if KernelProvisionerFactory.initialized():  # made before this extension loaded: its config is read
        KernelProvisionerFactory.instance().default_provisioner_name = PROVISIONER_NAME
    serverapp.log.info("daas-hub: kernels run at their session's CPU priority (provisioner %s)",
                       PROVISIONER_NAME)
