"""Real guacd and real VM targets on loopback, for the VM gateway's tests.

- guacd 1.6.0 built from its release source by ``make guacd`` (cached in
  /var/cache/daas-hub/guacd-1.6.0), run as its own unprivileged account, with the
  firewall rule that admits only the gateway's account (:mod:`daas_hub.guacd_firewall`);
- a VNC target: Debian's Xtigervnc with VNC password authentication and an xterm;
- an RDP target: Debian's xrdp (TLS security, its own self-signed pair), whose session
  shows that same X server (xrdp's own VNC module), so keys typed over RDP reach the xterm;
- an SSH target: Debian's openssh-server on its own port, password login for a test
  account.

Every server listens on 127.0.0.1 on a free port and is stopped by its own PID.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from conftest import free_port, stop_process, wait_until

GUACD_DIR = Path(os.environ.get("DAAS_HUB_GUACD_DIR", "/var/cache/daas-hub/guacd-1.6.0"))
GATEWAY_ACCOUNT = "daas-vmgw"
GUACD_ACCOUNT = "daas-guacd"
SSH_ACCOUNT = "daas-vmtest"


def ensure_account(name: str, *, shell: str = "/usr/sbin/nologin", home: str | None = None) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        args = ["useradd", "--system", "--user-group", "--shell", shell]
        args += ["--create-home", "--home-dir", home] if home else ["--no-create-home", "--home-dir", "/nonexistent"]
        subprocess.run([*args, name], check=True, capture_output=True, timeout=30)
        return pwd.getpwnam(name)


def listening(port: int) -> bool:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            return True
    return False


def as_account(account: str, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run Python ``code`` as ``account`` (the session's account, for the hostile tests)."""
    return subprocess.run(["runuser", "-u", account, "--", "/usr/bin/python3", "-c", code], capture_output=True,
                          text=True, timeout=timeout, cwd="/")


class Servers:
    """Started processes, stopped in reverse order by PID."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str], **kwargs) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in reversed(self.procs):
            stop_process(proc, timeout=10)


class Guacd:
    def __init__(self, servers: Servers, gateway_uid: int):
        self.port = free_port()
        self.gateway_uid = gateway_uid
        account = ensure_account(GUACD_ACCOUNT)
        self.account = account
        home = servers.folder / "guacd-home"  # FreeRDP keeps its certificate store in $HOME
        home.mkdir(mode=0o700)
        os.chown(home, account.pw_uid, account.pw_gid)
        self.proc = servers.start("guacd", [
            "runuser", "-u", GUACD_ACCOUNT, "--", "env", f"LD_LIBRARY_PATH={GUACD_DIR}/lib", f"HOME={home}",
            str(GUACD_DIR / "sbin/guacd"), "-b", "127.0.0.1", "-l", str(self.port), "-f", "-L", "info",
        ])
        wait_until(lambda: listening(self.port), timeout=30, what="guacd listening")

    def guard(self):
        from daas_hub import guacd_firewall

        guacd_firewall.apply(self.port, self.gateway_uid)

    def unguard(self):
        from daas_hub import guacd_firewall

        guacd_firewall.remove(self.port, self.gateway_uid)


class VncTarget:
    """Xtigervnc with a VNC password and an xterm (title ``vm-target``)."""

    def __init__(self, servers: Servers, folder: Path):
        self.password = secrets.token_hex(4)  # VNC passwords are 8 characters at most
        self.port = free_port()
        self.display = f":{self._free_display()}"
        passwd = folder / "vncpasswd"
        out = subprocess.run(["vncpasswd", "-f"], input=self.password.encode(), capture_output=True, check=True)
        passwd.write_bytes(out.stdout)
        passwd.chmod(0o600)
        self.proc = servers.start("xvnc", [
            shutil.which("Xtigervnc") or "/usr/bin/Xtigervnc", self.display, "-rfbport", str(self.port),
            "-localhost=1", "-SecurityTypes", "VncAuth", "-PasswordFile", str(passwd), "-geometry", "1024x768",
            "-nolisten", "tcp", "-AlwaysShared",
        ])
        wait_until(lambda: listening(self.port), timeout=30, what="Xtigervnc listening")
        self.typed = folder / "typed-on-vnc"
        env = {"DISPLAY": self.display, "PATH": "/usr/bin:/bin", "HOME": str(folder)}
        servers.start("xterm", ["xterm", "-T", "vm-target", "-geometry", "100x30+0+0", "-bg", "navy", "-fg", "yellow",
                                "-e", "/bin/sh"], env=env, cwd=folder)
        wait_until(lambda: "vm-target" in subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True,
                                                         text=True, timeout=10).stdout, timeout=30, what="the xterm")

    @staticmethod
    def _free_display() -> int:
        for n in range(40, 90):
            if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
                return n
        raise RuntimeError("no free X display")


class XrdpTarget:
    """xrdp on a loopback port whose only session is the VNC target's screen.

    Two settings are what make guacd 1.6.0 (FreeRDP 2.11) and xrdp 0.9.21 agree, found
    with xrdp's own log and ``guacd -L debug``:

    - ``allow_channels=true``: without it xrdp answers "0 channels" to a client that asked
      for two (guacd always asks for cliprdr and another), FreeRDP then joins them anyway
      and xrdp drops the connection ("DomainMCSPDU choice index 14 is unknown"), which
      guacd reports as "Server refused connection (wrong security type?)";
    - ``security_layer=tls`` with a certificate xrdp can read (a self-signed pair made
      here): with standard RDP security (``rdp``) xrdp rejects FreeRDP 2.11's first
      encrypted PDU ("MAC checksum error for non-FIPS PDU").
    """

    def __init__(self, servers: Servers, folder: Path, vnc: VncTarget):
        self.port = free_port()
        cert, key = folder / "xrdp-cert.pem", folder / "xrdp-key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True,
                       timeout=60)
        key.chmod(0o600)
        ini = folder / "xrdp.ini"
        ini.write_text(f"""[Globals]
ini_version=1
fork=true
port=tcp://127.0.0.1:{self.port}
security_layer=tls
certificate={cert}
key_file={key}
ssl_protocols=TLSv1.2, TLSv1.3
autorun=target
allow_channels=true
allow_multimon=false
max_bpp=24
new_cursors=true
use_fastpath=both
[Logging]
LogFile={folder}/xrdp-own.log
LogLevel=INFO
EnableSyslog=false
[Channels]
rdpdr=false
rdpsnd=false
drdynvc=false
cliprdr=false
rail=false
xrdpvr=false
[target]
name=target
lib=libvnc.so
ip=127.0.0.1
port={vnc.port}
username=na
password={vnc.password}
""")
        ini.chmod(0o600)
        self.log = folder / "xrdp-own.log"
        self.proc = servers.start("xrdp", ["xrdp", "--nodaemon", "--config", str(ini)])
        wait_until(lambda: listening(self.port), timeout=30, what="xrdp listening")


class SshTarget:
    def __init__(self, servers: Servers, folder: Path):
        self.port = free_port()
        self.home = Path("/var/tmp/daas-vmtest-home")
        account = ensure_account(SSH_ACCOUNT, shell="/bin/sh", home=str(self.home))
        self.account = account
        self.password = "pw-" + secrets.token_hex(6)
        subprocess.run(["chpasswd"], input=f"{SSH_ACCOUNT}:{self.password}", text=True, check=True, timeout=30)
        keys = folder / "ssh"
        keys.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host_ed25519")], check=True,
                       timeout=30)
        config = keys / "sshd_config"
        config.write_text(f"""ListenAddress 127.0.0.1
Port {self.port}
HostKey {keys}/host_ed25519
PidFile {keys}/sshd.pid
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication yes
PermitRootLogin no
AllowUsers {SSH_ACCOUNT}
""")
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = servers.start("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)])
        wait_until(lambda: listening(self.port), timeout=30, what="sshd listening")


def wait_gone(pids, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists()]:
            return
        time.sleep(0.2)
    raise TimeoutError(f"processes still running: {[p for p in pids if Path(f'/proc/{p}').exists()]}")
