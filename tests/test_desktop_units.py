"""Desktops, application desktops and the VM allow-list, without a hub: the pure parts.

The VNC input detector, the catalogue and the server-proxy entries built from it,
the VM allow-list rule and credentials files, the guacd firewall rule, the audit
record, the desktop lifetime rule, and the Guacamole protocol helpers.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from daas_hub import guacd_firewall
from daas_hub.errors import SettingsError
from daas_hub.model import Account, Member, MemberRole, Proposal, ProposalState
from daas_hub.proxies import guacamole as guac
from daas_hub.proxies import lifetime
from daas_hub.proxies.apps import (
    default_app_list_path,
    icon_path,
    load_app_list,
    parse_app_list,
    plan_desktops,
)
from daas_hub.proxies.desktop import WEBSOCKIFY, app_entry_name
from daas_hub.proxies.gateway import VmGateway, audit_entry
from daas_hub.proxies.rfb import InputDetector
from daas_hub.vmtargets import (
    connection_parameters,
    parse_targets,
    read_credentials,
    recording_parameters,
    targets_for,
)

# -- VNC input detection -------------------------------------------------------------------

HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"
SET_ENCODINGS = struct.pack(">BxH3i", 2, 3, 0, -223, -308)
FB_UPDATE = struct.pack(">BBHHHH", 3, 1, 0, 0, 1680, 1050)
POINTER = struct.pack(">BBHH", 5, 0, 100, 200)
KEY = struct.pack(">BBxxI", 4, 1, 0x61)
FENCE = struct.pack(">BxxxIB", 248, 0, 4) + b"abcd"
CUT = struct.pack(">Bxxxi", 6, 5) + b"hello"


def test_background_traffic_is_not_input():
    d = InputDetector()
    assert d.feed(HANDSHAKE) is False
    assert d.feed(SET_ENCODINGS + FB_UPDATE) is False
    for _ in range(50):
        assert d.feed(FB_UPDATE + FENCE) is False
    assert d.input_messages == 0


@pytest.mark.parametrize("message", [POINTER, KEY, CUT], ids=["pointer", "key", "clipboard"])
def test_input_is_input(message):
    d = InputDetector()
    d.feed(HANDSHAKE + SET_ENCODINGS)
    assert d.feed(FB_UPDATE + message) is True
    assert d.feed(FB_UPDATE) is False


def test_messages_split_across_websocket_frames():
    d = InputDetector()
    stream = HANDSHAKE + SET_ENCODINGS + FB_UPDATE + POINTER + FB_UPDATE
    seen = [d.feed(stream[i:i + 3]) for i in range(0, len(stream), 3)]
    assert sum(seen) == 1 and d.input_messages == 1


def test_unknown_message_counts_as_input_from_then_on():
    d = InputDetector()
    d.feed(HANDSHAKE)
    assert d.feed(b"\x99junk") is True
    assert d.feed(FB_UPDATE) is True  # can no longer tell: err towards "someone is there"


# -- the catalogue and the entries -----------------------------------------------------------

def fake_which(present):
    return lambda name: f"/usr/bin/{name}" if name in present else None


BASE = {"vncserver", "openbox", "xterm", "pcmanfm"}


def test_default_catalogue_ships_the_four_applications():
    apps = load_app_list()
    assert [a.id for a in apps] == ["pymca", "silx-view", "pyfai-calib2", "terminal"]
    assert all(a.profiles for a in apps), "the catalogue says which images provide each application"
    assert load_app_list(default_app_list_path()) == apps


def test_entries_plain_command_unix_socket_input_only_activity():
    plan = plan_desktops(load_app_list(), proposals_dir="/home/u/proposals", which=fake_which(BASE | {"pymca"}))
    desktop = plan.servers[WEBSOCKIFY]
    cmd = desktop["command"]
    assert cmd[0] == "/usr/bin/vncserver" and "/bin/sh" not in cmd and "-c" not in cmd
    assert cmd[cmd.index("-rfbunixpath") + 1] == "{unix_socket}"
    assert cmd[cmd.index("-rfbport") + 1] == "-1" and cmd[cmd.index("-nolisten") + 1] == "tcp"
    assert desktop["unix_socket"] is True and desktop["raw_socket_proxy"] is True
    assert desktop["update_last_activity"] is False
    assert "pcmanfm /home/u/proposals" in desktop["environment"]["DAAS_HUB_DESKTOP_STARTUP"]
    pymca = plan.servers[app_entry_name("pymca")]
    assert pymca["environment"] == {"DAAS_HUB_DESKTOP_STARTUP": "/usr/bin/pymca", "DAAS_HUB_DESKTOP_DIR": "/home/u/proposals"}
    assert pymca["launcher_entry"]["path_info"] == "apps/pymca/desktop/"
    assert pymca["launcher_entry"]["title"] == "PyMca"
    assert plan.offered == ("desktop", "pymca", "terminal")


def test_missing_applications_are_not_offered_and_say_why():
    plan = plan_desktops(load_app_list(), proposals_dir="/p", which=fake_which(BASE))
    skipped = dict(plan.skipped)
    assert set(plan.servers) == {WEBSOCKIFY, app_entry_name("terminal")}
    assert "no usable pymca on the session's PATH" in skipped["application pymca"]
    assert "silx (Debian)" in skipped["application silx-view"]


def test_without_vncserver_there_is_no_desktop():
    plan = plan_desktops(load_app_list(), proposals_dir="/p", which=fake_which({"xterm", "pymca"}))
    assert plan.servers == {} and plan.offered == ()
    assert "tigervnc-standalone-server" in dict(plan.skipped)["desktop"]


@pytest.mark.parametrize("document, where, fix", [
    ({"applications": [{"id": "PyMca", "title": "x", "command": ["pymca"]}]},
     'applications[0] "PyMca" > id', "lower-case letters"),
    ({"applications": [{"id": "pymca", "title": "x", "command": "pymca"}]},
     'applications[0] "pymca" > command', "as a list"),
    ({"applications": [{"id": "a", "title": "x", "command": ["a"], "args": []}]},
     'applications[0] "a"', "remove or rename the key"),
    ({"applications": [{"id": "a", "title": "x", "command": ["a"]}, {"id": "a", "title": "y", "command": ["b"]}]},
     'applications[1] "a" > id', "its own id"),
], ids=["bad-id", "command-not-list", "unknown-key", "duplicate"])
def test_bad_catalogue_says_where_and_how_to_fix(document, where, fix):
    with pytest.raises(SettingsError) as e:
        parse_app_list(document, "apps.yaml")
    assert e.value.entry == where and fix in e.value.fix


def test_missing_catalogue_file(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_app_list(str(tmp_path / "nope.yaml"))


# -- who may open which VM -------------------------------------------------------------------

TARGETS = {"targets": [
    {"id": "id11-ws", "title": "ID11 workstation", "protocol": "rdp",
     "parameters": {"hostname": "id11-ws.example", "username": "opid11", "ignore-cert": True},
     "credentials": "secrets/id11-ws.yaml", "allow": {"instruments": ["ID11"]}},
    {"id": "mx-pi-vm", "title": "MX-1001 analysis VM", "protocol": "vnc",
     "parameters": {"hostname": "mx.example", "port": 5901},
     "allow": {"proposals": ["MX-1001"], "proposal_roles": ["pi"]}},
    {"id": "control", "title": "Beamline control", "protocol": "ssh",
     "parameters": {"hostname": "ctl.example"}, "allow": {"roles": ["staff"]}},
]}


def proposal(pid, instrument, members, state=ProposalState.ACTIVE):
    return Proposal(pid, "t", instrument, "DEMO", state, tuple(Member(u, MemberRole(r)) for u, r in members))


PROPOSALS = [
    proposal("MX-1001", "ID11", [("alice", "pi"), ("bob", "member")]),
    proposal("HC-3003", "ID11", [("carol", "pi")], ProposalState.ARCHIVED),
    proposal("EC-2002", "ID21", [("bob", "pi")]),
]


@pytest.mark.parametrize("user, roles, expected", [
    ("alice", [], ["id11-ws", "mx-pi-vm"]),          # PI of an ID11 proposal
    ("bob", [], ["id11-ws"]),                        # member, not PI
    ("carol", [], []),                               # only an archived ID11 proposal
    ("dave", ["staff"], ["control"]),                # by role
    ("erin", [], []),                                # no proposal
])
def test_vm_allow_list(user, roles, expected):
    targets = parse_targets(TARGETS, "vm.yaml")
    got = targets_for(Account(user, roles=frozenset(roles)), PROPOSALS, targets)
    assert [t.id for t in got] == expected


def test_vm_credentials_come_from_a_private_file_of_the_gateway(tmp_path):
    (tmp_path / "secrets").mkdir()
    secret = tmp_path / "secrets/id11-ws.yaml"
    secret.write_text("password: s3cret\n")
    secret.chmod(0o600)
    (target, *_) = parse_targets(TARGETS, tmp_path / "vm.yaml")
    assert target.credentials == str(secret)  # relative to the targets file
    creds = read_credentials(target, owner=os.getuid())
    params = connection_parameters(target, creds, recording=recording_parameters("/rec", user="bob", target_id="id11-ws"))
    assert params["password"] == "s3cret" and params["ignore-cert"] == "true" and params["hostname"] == "id11-ws.example"
    assert params["recording-path"] == "/rec/bob" and params["create-recording-path"] == "true"
    assert "s3cret" not in json.dumps(target.public()) and "id11-ws.example" not in json.dumps(target.public())
    assert recording_parameters("", user="bob", target_id="x") == {}
    secret.chmod(0o640)  # readable by a group: refused, with the fix
    with pytest.raises(SettingsError, match="readable by other accounts") as e:
        read_credentials(target, owner=os.getuid())
    assert "chmod 0600" in e.value.fix
    secret.chmod(0o600)
    with pytest.raises(SettingsError, match="readable by other accounts"):
        read_credentials(target, owner=os.getuid() + 1)  # owned by another account
    link = tmp_path / "secrets/link.yaml"
    link.symlink_to(secret)
    with pytest.raises(SettingsError, match="cannot read"):
        read_credentials(replace(target, credentials=str(link)), owner=os.getuid())


@pytest.mark.parametrize("name, words", [
    ("password", "a secret in the targets file"),
    ("private-key", "a secret in the targets file"),
    ("recording-path", "only the VM gateway sets this parameter"),
    ("create-recording-path", "only the VM gateway sets this parameter"),
])
def test_vm_targets_file_refuses_secrets_and_gateway_parameters(name, words):
    bad = {"targets": [{"id": "x", "title": "x", "protocol": "ssh", "parameters": {"hostname": "h", name: "v"},
                        "allow": {"roles": ["staff"]}}]}
    with pytest.raises(SettingsError, match=words) as e:
        parse_targets(bad, "vm.yaml")
    assert e.value.entry == f'targets[0] "x" > parameters > {name}'


def test_guacd_firewall_rule_admits_only_the_gateway_account():
    rule = guacd_firewall.rule(4822, 990)
    assert rule[:7] == ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", "4822"]
    assert rule[rule.index("owner") + 1:rule.index("owner") + 4] == ["!", "--uid-owner", "990"]
    assert rule[-4:] == ["-j", "REJECT", "--reject-with", "tcp-reset"]


def test_audit_entry_names_user_target_times_and_bytes():
    entry = audit_entry("connection", user="bob", target="id11-ws", protocol="rdp", start=0.0, end=61.5,
                        bytes_in=1200, bytes_out=80, client="127.0.0.1")
    assert entry == {"event": "connection", "user": "bob", "target": "id11-ws", "protocol": "rdp",
                     "start": "1970-01-01T00:00:00.000+00:00", "end": "1970-01-01T00:01:01.500+00:00",
                     "seconds": 61.5, "bytes_in": 1200, "bytes_out": 80, "client": "127.0.0.1"}


@pytest.mark.parametrize("seconds", [0, -5])
def test_recheck_interval_must_be_positive(seconds):
    with pytest.raises(ValueError, match="VmGateway.recheck_seconds must be more than 0 seconds"):
        VmGateway(recheck_seconds=seconds)


@pytest.mark.parametrize("kwargs, words", [
    ({}, "needs config_file= (the hub starts the gateway) or url= and api_token="),
    ({"url": "http://daas-vm-gateway:8091"}, "needs the API token it shares with the hub"),
])
def test_configure_vm_gateway_says_what_is_missing(kwargs, words):
    from traitlets.config import Config

    from daas_hub.vmgateway import configure_vm_gateway

    c = Config()
    with pytest.raises(ValueError, match=re.escape(words)):
        configure_vm_gateway(c, **kwargs)
    assert "services" not in c.JupyterHub


def test_configure_vm_gateway_gives_every_backend_the_tile():
    from traitlets.config import Config

    from daas_hub.vmgateway import configure_vm_gateway

    c = Config()
    configure_vm_gateway(c, url="http://daas-vm-gateway:8091", api_token="t" * 32)
    assert [c[k].vm_service for k in ("LocalSpawner", "SlurmSpawner", "KubeSessionSpawner")] == ["vm"] * 3


# -- desktops end with their server ----------------------------------------------------------

def test_orphans_are_processes_whose_server_is_gone():
    procs = [lifetime.Process(10, "100:5", "Xtigervnc :1"), lifetime.Process(11, "200:7", "openbox"),
             lifetime.Process(12, "", "bash"), lifetime.Process(13, "100:9", "xterm")]
    alive = {"200:7", "100:9"}.__contains__  # 100:5 is gone (pid 100 now runs something started later)
    assert [p.pid for p in lifetime.orphans(procs, alive=alive)] == [10]
    assert lifetime.orphans(procs, alive=alive, own=[10]) == []


def test_desktop_commands_run_under_the_guard_and_tiles_have_icons():
    guard = ("/venv/bin/python", "-m", "daas_hub.proxies.lifetime", "--")
    plan = plan_desktops(load_app_list(), proposals_dir="/p", which=fake_which(BASE | {"pymca"}), guard=guard)
    for entry in plan.servers.values():
        assert tuple(entry["command"][:4]) == guard and entry["command"][4] == "/usr/bin/vncserver"
    icon = plan.servers[app_entry_name("pymca")]["launcher_entry"]["icon_path"]
    assert icon.endswith("icons/pymca.svg") and Path(icon).read_text().startswith("<svg")
    assert icon_path("crystfel").endswith("icons/application.svg")


def test_vm_targets_file_errors():
    bad = {"targets": [{"id": "x", "title": "x", "protocol": "telnet", "parameters": {"hostname": "h"},
                        "allow": {"roles": ["staff"]}}]}
    with pytest.raises(SettingsError) as e:
        parse_targets(bad, "vm.yaml")
    assert e.value.entry == 'targets[0] "x" > protocol' and "rdp" in e.value.fix
    nobody = {"targets": [{"id": "x", "title": "x", "protocol": "ssh", "parameters": {"hostname": "h"}, "allow": {}}]}
    with pytest.raises(SettingsError, match="allow"):
        parse_targets(nobody, "vm.yaml")


# -- the Guacamole protocol ------------------------------------------------------------------

def test_encode_and_parse_instructions_split_anywhere():
    text = guac.encode("size", 0, 1024, 768) + guac.encode("name", "Grüße;,.") + guac.encode("", "ping", 12)
    assert text.startswith("4.size,1.0,4.1024,3.768;")
    for cut in range(1, len(text)):
        p = guac.InstructionParser()
        got = p.feed(text[:cut]) + p.feed(text[cut:])
        assert got == [("size", ["0", "1024", "768"]), ("name", ["Grüße;,."]), ("", ["ping", "12"])]


def test_parser_rejects_garbage():
    with pytest.raises(guac.ProtocolError):
        guac.InstructionParser().feed("x.size;")


def test_connect_values_follow_guacd_args_order():
    target = guac.Target("t", "T", "rdp", {"hostname": "h", "password": "p", "port": "3389"})
    assert guac.connect_values(["VERSION_1_5_0", "hostname", "port", "domain", "password"], target) == [
        "VERSION_1_5_0", "h", "3389", "", "p"]


def test_browser_chooses_only_a_bounded_size():
    assert guac.client_size({"width": "1900", "height": "99999", "dpi": "x"}) == guac.ClientSize(1900, 8192, 96)


def test_gui_which_passes_over_a_python_without_qt(tmp_path):
    """The Jupyter environment's own pyFAI-calib2 (no PyQt5) is passed over for the next one on PATH."""
    import sys

    from daas_hub.proxies.extension import GuiWhich

    venv, system = tmp_path / "venv", tmp_path / "system"
    venv.mkdir()
    system.mkdir()
    (venv / "pyFAI-calib2").write_text(f"#!{sys.executable}\nprint('no Qt here')\n")
    (system / "pyFAI-calib2").write_text("#!/bin/sh\necho a GUI\n")
    for f in (venv / "pyFAI-calib2", system / "pyFAI-calib2"):
        f.chmod(0o755)
    which = GuiWhich(path=f"{venv}:{venv}:{system}")
    assert which("pyFAI-calib2") == str(system / "pyFAI-calib2")
    (passed,) = which.passed_over["pyFAI-calib2"]
    assert str(venv / "pyFAI-calib2") in passed and "no Qt binding" in passed
    assert which("not-installed-anywhere") is None
