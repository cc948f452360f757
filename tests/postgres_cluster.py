"""A PostgreSQL server of the test's own, to stop and restart at will.

The outage tests restart the server under running workers. Restarting the shared
server (``.ci/postgres.sh``'s cluster) would break every other test and every other
run using it at the time, so they start a throwaway cluster instead: ``initdb`` in a
temporary directory, on a free port, with a password (to check that none leaks into
messages and logs), ``fsync=off`` (nothing here must survive the machine). As root
(CI), the server runs as the ``postgres`` user, as ``.ci/postgres.sh`` does it.

The tests skip only when no PostgreSQL server is installed (``initdb`` not found);
a server that is installed but does not start is an error.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

USER = "duron_outage"
PASSWORD = "outage-secret-8d41"


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


BIN = _bin_dir()
requires_postgres_server = pytest.mark.skipif(
    BIN is None,
    reason="no PostgreSQL server installed (apt-get install postgresql): the "
    "outage tests start one of their own",
)


def _as_server_user(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    if os.getuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running throwaway cluster; ``dsn`` reaches it as a password user."""

    directory: str
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{USER}"

    def _ctl(self, *args: str) -> None:
        assert BIN is not None
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=60"
        )
        subprocess.run(
            _as_server_user(
                [
                    f"{BIN}/pg_ctl",
                    "-D",
                    f"{self.directory}/data",
                    "-l",
                    f"{self.directory}/server.log",
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "30",
                    *args,
                ]
            ),
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        """Stop it as an administrator would: sessions are terminated."""
        self._ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def running(self) -> bool:
        assert BIN is not None
        done = subprocess.run(
            _as_server_user(
                [f"{BIN}/pg_ctl", "-D", f"{self.directory}/data", "status"]
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return done.returncode == 0


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A fresh cluster with a database and a password role; removed at the end."""
    assert BIN is not None
    directory = tempfile.mkdtemp(prefix="duron-outage-pg-")
    os.chmod(directory, 0o755)
    if os.getuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    c = Cluster(directory, _free_port())
    try:
        password_file = os.path.join(directory, "password")
        with open(password_file, "w") as f:
            f.write(PASSWORD + "\n")
        if os.getuid() == 0:
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            _as_server_user(
                [
                    f"{BIN}/initdb",
                    "-D",
                    f"{directory}/data",
                    "-U",
                    USER,
                    "--pwfile",
                    password_file,
                    "-A",
                    "scram-sha-256",
                    "-E",
                    "UTF8",
                    "-N",
                ]
            ),
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        c.start()
        import psycopg

        with psycopg.connect(
            f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{c.port}/postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f"CREATE DATABASE {USER}")
        yield c
    finally:
        deadline = time.monotonic() + 30
        while c.running() and time.monotonic() < deadline:
            try:
                c._ctl("-m", "immediate", "stop")
            except subprocess.CalledProcessError:
                time.sleep(0.2)
        shutil.rmtree(directory, ignore_errors=True)
