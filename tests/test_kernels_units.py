"""Kernels at their session's CPU priority, the pure parts (daas_hub/spawners/kernels.py): the
``/proc/<pid>/autogroup`` parser, the site's own choice of provisioner, the entry point.
The real server and hub are in tests/test_kernels.py."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from daas_hub.spawners.kernels import PROVISIONER_NAME, autogroup_nice, parse_autogroup, site_provisioner


@pytest.mark.parametrize("text, nice", [
    ("/autogroup-123 nice 10\n", 10),
    ("/autogroup-9244 nice 0\n", 0),
    ("/autogroup-1 nice -5", -5),
    ("/autogroup-77 nice 19\n", 19),
    ("", None),
    ("/autogroup-123 nice ten\n", None),
    ("autogroup-123 nice 10\n", None),
    ("/autogroup-123 nice 10 extra\n", None),
])
def test_parse_autogroup(text, nice):
    assert parse_autogroup(text) == nice


def test_no_autogroup_file_is_none(tmp_path):
    assert autogroup_nice(123, proc=str(tmp_path)) is None
    (tmp_path / "123").mkdir()
    (tmp_path / "123" / "autogroup").write_text("/autogroup-5 nice 7\n")
    assert autogroup_nice(123, proc=str(tmp_path)) == 7


@pytest.mark.parametrize("config, environ, chosen", [
    ({}, {}, None),
    ({"KernelProvisionerFactory": {"default_provisioner_name": "site-one"}}, {}, "site-one"),
    ({"KernelProvisionerFactory": {}}, {}, None),
    ({}, {"JUPYTER_DEFAULT_PROVISIONER_NAME": "from-env"}, "from-env"),
    ({"KernelProvisionerFactory": {"default_provisioner_name": "site-one"}},
     {"JUPYTER_DEFAULT_PROVISIONER_NAME": "from-env"}, "site-one"),
])
def test_site_provisioner(config, environ, chosen):
    assert site_provisioner(Config(config), environ) == chosen


def test_the_provisioner_is_registered():
    from importlib.metadata import entry_points

    from daas_hub.spawners.kernels import SessionPriorityProvisioner

    (ep,) = entry_points(group="jupyter_client.kernel_provisioners", name=PROVISIONER_NAME)
    assert ep.load() is SessionPriorityProvisioner
