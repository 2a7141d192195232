"""A throwaway PostgreSQL cluster for tests and benchmarks (Debian's postgresql).

initdb runs as the ``postgres`` system account when we are root (PostgreSQL
refuses to run as root), in a fresh folder under /var/tmp; the server listens on
127.0.0.1 on a free port with its socket in that folder, and is stopped by PID.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()`` a cluster, ``psql(sql)`` as the superuser, ``url`` for SQLAlchemy, ``stop()``."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = _free_port()
        self.superuser_password = secrets.token_hex(12)
        self.dir = Path(tempfile.mkdtemp(prefix="daas-pg-", dir="/var/tmp"))
        self.proc: subprocess.Popen | None = None
        self._as = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"

    def _run(self, *cmd, **kwargs):
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, cwd=self.dir, **self._as, **kwargs)

    def start(self, timeout: float = 60) -> PostgresServer:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.superuser_password + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        log = open(self.log, "w")
        if self._as:
            os.chown(self.log, self._as["user"], self._as["group"])
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.dir, **self._as,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited: {self.log.read_text()[-2000:]}")
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"PostgreSQL did not accept connections in {timeout} s")

    def url(self, user: str = "postgres", database: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.superuser_password}
        return subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", database, "-At", "-c", sql],
            check=True, capture_output=True, text=True, timeout=300, env=env,
        ).stdout

    def copy_in(self, table: str, rows, database: str = "postgres") -> None:
        """Bulk-load ``rows`` (tuples of str) with COPY FROM STDIN."""
        env = {**os.environ, "PGPASSWORD": self.superuser_password}
        data = "".join("\t".join(r) + "\n" for r in rows)
        subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", database, "-c", f"COPY {table} FROM STDIN"],
            check=True, input=data, capture_output=True, text=True, timeout=600, env=env,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
