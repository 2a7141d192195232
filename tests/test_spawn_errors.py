"""Spawn refusals keep their status code and log message on JupyterHub 6 and in the 5.5
fallback (tests/test_packaging.py runs the 5.5 path on a real 5.5.4); one way to log and
show an error: a sentence to the person, the detail in the log."""

from __future__ import annotations

import logging
import re

import pytest

common = pytest.importorskip("daas_hub.spawners.common")


@pytest.mark.parametrize("cls", [common.SpawnException, common.CompatSpawnException], ids=["hub", "compat-5.5"])
def test_refusal_keeps_status_reason_and_log_message(cls):
    err = cls("The cluster is full (50%).", reason="capacity", log_message="sbatch: 503 from slurmctld",
              status_code=503)
    assert (err.status_code, err.reason, err.message) == (503, "capacity", "The cluster is full (50%).")
    assert err.log_message == "sbatch: 503 from slurmctld" and err.get_message() == "sbatch: 503 from slurmctld"
    assert str(err).startswith("503 ") and "sbatch: 503 from slurmctld" in str(err)
    plain = cls("No.", reason="x")
    assert (plain.status_code, plain.log_message) == (400, "No.")


def test_refuse_sets_the_message_people_read():
    err = common.refuse("Not started: cpu: 99 is out of range.", reason="options", status_code=400)
    assert err.jupyterhub_message == "Not started: cpu: 99 is out of range."
    assert err.status_code == 400 and err.log_message == err.jupyterhub_message


def test_shown_error_shows_our_sentence_and_logs_the_detail(caplog):
    log = logging.getLogger("test-shown")
    err = common.refuse("You may not start.", reason="x", log_message="policy said no")
    with caplog.at_level(logging.WARNING, "test-shown"):
        assert common.shown_error(err, log=log, server="alice:mx", doing="Preparing the form",
                                  contact="the user office") == "You may not start."
    assert "Preparing the form for alice:mx refused: policy said no" in caplog.text


def test_shown_error_never_shows_an_arbitrary_exception(caplog):
    log = logging.getLogger("test-shown")
    with caplog.at_level(logging.WARNING, "test-shown"):
        try:
            raise KeyError("secret-token-value")
        except KeyError as e:
            shown = common.shown_error(e, log=log, server="alice:mx", doing="Preparing the form",
                                       contact="the user office")
    assert "secret-token-value" not in shown and "KeyError" not in shown
    ref = re.search(r"\(Reference ([0-9a-f]+): quote it when you ask for help\.\)$", shown).group(1)
    assert shown.startswith("Preparing the form failed on the hub. Contact the user office if this persists.")
    assert f"[{ref}] Preparing the form for alice:mx failed" in caplog.text and "secret-token-value" in caplog.text


SETTING_TYPOS = [
    ({"role_quotas": {"user": {"cpus": 4}}}, "DaasSpawner.role_quotas.user.cpus: unknown key"),
    ({"role_quotas": {"students": {"cpu": 4}}}, "DaasSpawner.role_quotas.students: unknown role"),
    ({"proposal_quotas": {"MX-1001": {"gpu": "x"}}}, "DaasSpawner.proposal_quotas.MX-1001.gpu = 'x' is not a number"),
    ({"profiles_enabled": ["pyhton"]}, 'DaasSpawner.profiles_enabled: unknown profile "pyhton"'),
    ({"backends": ["slurmm"]}, "DaasSpawner.backends lists ['slurmm']"),
]


@pytest.mark.parametrize(("settings", "message"), SETTING_TYPOS, ids=[next(iter(s)) for s, _ in SETTING_TYPOS])
def test_a_settings_typo_stops_the_spawner_being_built_naming_the_setting(settings, message):
    from traitlets.config import Config

    from daas_hub.spawners.wrapper import DaasSpawner

    with pytest.raises(ValueError) as info:
        DaasSpawner(config=Config({"DaasSpawner": settings}))
    assert str(info.value).startswith(message), str(info.value)


def test_quotas_are_parsed_once():
    from traitlets.config import Config

    from daas_hub.spawners.wrapper import DaasSpawner

    sp = DaasSpawner(config=Config({"DaasSpawner": {"role_quotas": {"user": {"cpu": 4}}}}))
    assert sp.quotas is sp.quotas and sp.quotas.for_roles(()).cpu == 4
    sp.role_quotas = {"user": {"cpu": 6}}
    assert sp.quotas.for_roles(()).cpu == 6


def test_backend_settings_set_on_the_wrapper_are_named():
    from traitlets.config import Config

    from daas_hub.spawners.wrapper import misplaced_backend_settings, misplaced_backend_settings_message

    c = Config()
    c.DaasSpawner.args = ["--ServerApp.jpserver_extensions={'jupyter_lsp': True}"]
    c.DaasSpawner.environment = {"A": "1"}
    c.DaasSpawner.start_timeout = 600  # the hub's own: read from DaasSpawner
    c.LocalSpawner.args = ["--debug"]  # in the right place
    assert misplaced_backend_settings(c) == ["args", "environment"]
    message = misplaced_backend_settings_message(["args", "environment"])
    assert message.startswith("c.DaasSpawner.args, c.DaasSpawner.environment are set but do nothing")
    assert "Set c.Spawner.args (every backend) or c.LocalSpawner.args / c.SlurmSpawner.args" in message
    assert misplaced_backend_settings_message(["args"]).startswith("c.DaasSpawner.args is set but does nothing")
    assert misplaced_backend_settings(Config()) == []
