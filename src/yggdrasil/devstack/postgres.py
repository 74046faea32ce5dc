"""An embedded PostgreSQL server from the PyPI package `pgserver`, listening on 127.0.0.1.

We use pgserver's binaries (initdb, postgres, pg_dump, pgbench ...) but start the postmaster
ourselves, on TCP, so that tests and `ygg demo` can stop, kill and restart it like any real
server. PostgreSQL refuses to run as root; when we are root, it runs as the `pgserver` user
(the same user pgserver itself creates).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import importlib.util
import stat

import psycopg

from yggdrasil.devstack.ports import free_port

log = logging.getLogger(__name__)

POSTGRES_SYSTEM_USER = "pgserver"


def _pgserver_install() -> Path:
    # Located without importing pgserver: its import creates runtime directories and lock files
    # we do not use, and warns when XDG_RUNTIME_DIR is unset.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver package is not installed: pip install pgserver")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall"


POSTGRES_BIN_PATH = _pgserver_install() / "bin"


def pg_binary(name: str) -> Path:
    return POSTGRES_BIN_PATH / name


_READ_TRAVERSE = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH


def _open_path_to(path: Path) -> None:
    """Let other users traverse every folder from / down to `path`."""
    for folder in [path, *path.parents]:
        if folder.is_dir():
            folder.chmod(folder.stat().st_mode | stat.S_IXGRP | stat.S_IXOTH)


def _open_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        Path(folder).chmod(Path(folder).stat().st_mode | _READ_TRAVERSE)
        for name in files:
            file = Path(folder) / name
            file.chmod(file.stat().st_mode | stat.S_IRGRP | stat.S_IROTH
                       | (stat.S_IXGRP | stat.S_IXOTH if file.stat().st_mode & stat.S_IXUSR else 0))


def _run_as() -> str | None:
    """PostgreSQL will not run as root; as root we run it as an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", POSTGRES_SYSTEM_USER],
                       check=True, capture_output=True)
    install = POSTGRES_BIN_PATH.parent
    _open_path_to(install)
    _open_tree(install)
    return POSTGRES_SYSTEM_USER


class EmbeddedPostgres:
    """One PostgreSQL cluster in `data_dir`. `start()` initialises it on first use."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1"):
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None
        self._user = _run_as()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _chown(self, path: Path) -> None:
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def initialise(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            _open_path_to(self.data_dir.parent)
        self._chown(self.data_dir)
        self.data_dir.chmod(0o700)
        # Collation C: the order glibc's C.UTF-8 gives UTF-8 text (by code point) is its byte
        # order, but PostgreSQL 16 compares bytes directly only under C; under C.UTF-8 each
        # btree step on a text key (tenant, order and event ids in the federation's indexes)
        # went through strcoll. Character classes stay C.UTF-8 (upper() of non-ASCII letters).
        subprocess.run(
            [str(pg_binary("initdb")), "-D", str(self.data_dir), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--lc-collate=C"],
            check=True, capture_output=True, user=self._user,
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the postmaster and wait until it accepts connections."""
        self.initialise()
        log_file = self.data_dir / "server.log"
        if not log_file.exists():
            log_file.touch()
            self._chown(log_file)
        with open(log_file, "ab") as out:
            self.process = subprocess.Popen(
                [str(pg_binary("postgres")), "-D", str(self.data_dir),
                 "-h", self.host, "-p", str(self.port), "-k", "",
                 "-c", "max_connections=300", "-c", "fsync=on",
                 "-c", "shared_buffers=128MB", "-c", "max_wal_senders=4", "-c", "wal_level=replica"],
                stdout=out, stderr=subprocess.STDOUT, user=self._user,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with code {self.process.returncode}; see {log_file}:\n"
                    + log_file.read_text()[-2000:]
                )
            try:
                with psycopg.connect(self.dsn(), connect_timeout=1):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not accept connections within {timeout}s; see {log_file}")

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the postmaster: 'smart' (SIGTERM), 'fast' (SIGINT), 'immediate' (SIGQUIT), 'kill' (SIGKILL)."""
        if not self.process or self.process.poll() is not None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT,
               "kill": signal.SIGKILL}[mode]
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if mode == "kill":
            # Backends outlive a SIGKILLed postmaster briefly; wait for the port to free up.
            self._wait_backends_gone()

    def _wait_backends_gone(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not (self.data_dir / "postmaster.pid").exists():
                return
            try:
                pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
                os.kill(pid, 0)
            except (ProcessLookupError, ValueError, IndexError, FileNotFoundError):
                return
            time.sleep(0.05)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedPostgres":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
