"""`ygg demo`: the whole system on 127.0.0.1, supervised, with sample data.

What lives in STATE_DIR:

    postgres/            the embedded cluster (kept between runs; its log is postgres/server.log)
    logs/<process>.log   one log per supervised process (tenant-acme.log, ...) and demo.log
    demo-state.json      what a later run reuses: ports, admin tokens, which tenants are seeded
    stack.json           only while the stack runs: URLs, DSNs, tokens and pids, for scripts

The first run creates one database per tenant, migrates it and seeds sample data through the
tenant's API; later runs reuse all of it (migrations are applied again, which is a no-op when
nothing is new). A tenant whose seeding did not finish is recreated from scratch next time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from yggdrasil import db
from yggdrasil.devstack.postgres import EmbeddedPostgres
from yggdrasil.devstack.ports import free_port
from yggdrasil.devstack.seed import SeedError, seed_tenant
from yggdrasil.devstack.supervisor import (
    EmbeddedSpec,
    ProcessSpec,
    Shutdown,
    SignalGuard,
    StartupFailed,
    Supervisor,
)

log = logging.getLogger("ygg.demo")

HOST = "127.0.0.1"
STACK_FILE = "stack.json"
STATE_FILE = "demo-state.json"
TENANT_MIGRATIONS = "yggdrasil.tenant"
# Extra tenants beyond the first two, for `--tenants N`.
EXTRA_TENANT_IDS = ("charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett")


@dataclass(frozen=True)
class DemoTenant:
    id: str
    name: str

    @property
    def database(self) -> str:
        return "ygg_tenant_" + self.id.replace("-", "_")

    @property
    def process_name(self) -> str:
        return f"tenant:{self.id}"

    @property
    def log_name(self) -> str:
        return f"tenant-{self.id}.log"


DEFAULT_TENANTS = (DemoTenant("acme", "ACME Seller"), DemoTenant("bravo", "BRAVO Buyer"))
MAX_TENANTS = len(DEFAULT_TENANTS) + len(EXTRA_TENANT_IDS)


def demo_tenants(count: int) -> tuple[DemoTenant, ...]:
    """acme and bravo, then charlie, delta, ... up to `count` tenants."""
    if not 1 <= count <= MAX_TENANTS:
        raise ValueError(f"the demo runs 1 to {MAX_TENANTS} tenants, not {count}")
    extra = tuple(DemoTenant(t, f"{t.upper()} Trading") for t in EXTRA_TENANT_IDS)
    return (DEFAULT_TENANTS + extra)[:count]


# -- small file helpers -----------------------------------------------------------------------

def write_json_atomically(path: Path, data: Any) -> None:
    """Readers see the old file or the new one, never half of one: write a temporary file in
    the same folder, fsync it, rename it over the target. Mode 0600: the file holds tokens."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _port_is_free(port: int | None) -> bool:
    if not port:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves do: a port whose last connections linger in TIME_WAIT
        # after the previous run is free for a listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _reuse_port(port: int | None, claimed: set[int]) -> int:
    """The port of the previous run if it is still free (stable URLs and DSN), else a new one;
    never one already `claimed` in this run (nothing listens on those yet)."""
    if not (port and port not in claimed and _port_is_free(port)):
        port = free_port(HOST)
        while port in claimed:
            port = free_port(HOST)
    claimed.add(port)
    return port


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _stop_orphaned_postgres(data_dir: Path, previous_stack: dict[str, Any]) -> None:
    """A demo that was SIGKILLed leaves its PostgreSQL running (its tenant servers die with it:
    they carry the parent-death signal). Stop that postmaster, but only if the last stack.json
    names it and it serves our data directory: never someone else's server."""
    pid = (previous_stack.get("processes") or {}).get("postgres")
    lock = data_dir / "postmaster.pid"
    if not pid or not lock.exists() or not _alive(pid):
        return
    try:
        lock_pid = int(lock.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return
    if lock_pid != pid or str(data_dir).encode() not in cmdline:
        return
    log.warning("PostgreSQL pid %s from a previous demo run is still running; stopping it", pid)
    os.kill(pid, signal.SIGINT)  # fast shutdown
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


# -- the stack ----------------------------------------------------------------------------------

class DemoStack:
    """Everything `run_demo` starts, and the stack.json that describes it."""

    def __init__(self, state_dir: Path, tenants: Sequence[DemoTenant]):
        self.state_dir = state_dir
        self.tenants = list(tenants)
        self.logs = state_dir / "logs"
        self.stack_file = state_dir / STACK_FILE
        self.state_file = state_dir / STATE_FILE
        self.state = _read_json(self.state_file)
        self.state.setdefault("tenants", {})
        self.guard = SignalGuard()
        self.postgres: EmbeddedPostgres | None = None
        self.supervisor: Supervisor | None = None
        self.ports: dict[str, int] = {}
        self.claimed_ports: set[int] = set()
        self.tokens: dict[str, str] = {}
        self.published = False  # stack.json is written only once everything is ready
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    # -- state that outlives a run ---------------------------------------------------------------

    def _tenant_state(self, tenant: DemoTenant) -> dict[str, Any]:
        return self.state["tenants"].setdefault(tenant.id, {})

    def _save_state(self) -> None:
        write_json_atomically(self.state_file, self.state)

    def tenant_dsn(self, tenant: DemoTenant) -> str:
        assert self.postgres is not None
        return self.postgres.dsn(tenant.database)

    def tenant_url(self, tenant: DemoTenant) -> str:
        return f"http://{HOST}:{self.ports[tenant.id]}"

    # -- steps --------------------------------------------------------------------------------------

    def start_postgres(self) -> None:
        data_dir = self.state_dir / "postgres"
        previous = _read_json(self.stack_file)
        # A stack.json left by a crashed run describes processes that are gone: remove it first
        # so that nobody waiting for the new one reads the old one.
        with contextlib.suppress(FileNotFoundError):
            self.stack_file.unlink()
        _stop_orphaned_postgres(data_dir.absolute(), previous)
        port = _reuse_port(self.state.get("postgres_port"), self.claimed_ports)
        self.postgres = EmbeddedPostgres(data_dir, port=port)
        self.state["postgres_port"] = self.postgres.port
        self.supervisor = Supervisor(
            [EmbeddedSpec("postgres", self.postgres, log_file=self.postgres.data_dir / "server.log",
                          stage=0, stop_signal=signal.SIGINT, stop_timeout=20.0)],
            guard=self.guard, on_change=lambda _: self.write_stack_file(),
        )
        log.info("starting PostgreSQL on %s:%s (data in %s)", HOST, self.postgres.port, data_dir)
        self.supervisor.start_all()

    def prepare_tenant_databases(self) -> None:
        """Create (or recreate, if its seeding never finished) and migrate each tenant's database,
        and make sure each has a valid admin token."""
        assert self.postgres is not None
        admin_dsn = self.postgres.dsn()
        for tenant in self.tenants:
            state = self._tenant_state(tenant)
            exists = db.database_exists(admin_dsn, tenant.database)
            if exists and not state.get("seeded"):
                log.info("database %s was never fully seeded; recreating it", tenant.database)
                db.drop_database(admin_dsn, tenant.database)
                exists = False
            if not exists:
                db.create_database(admin_dsn, tenant.database)
                state["seeded"] = False
                state.pop("admin_token", None)
            applied = db.apply_migrations(self.tenant_dsn(tenant), TENANT_MIGRATIONS)
            if applied:
                log.info("%s: applied migrations %s", tenant.id, ", ".join(f"{m.version:04d}" for m in applied))
            self.tokens[tenant.id] = self._admin_token(tenant, state)
            self.ports[tenant.id] = _reuse_port(state.get("port"), self.claimed_ports)
            state["port"] = self.ports[tenant.id]
        self._save_state()

    def _admin_token(self, tenant: DemoTenant, state: dict[str, Any]) -> str:
        from yggdrasil.tenant.auth import create_token, hash_token

        with psycopg.connect(self.tenant_dsn(tenant)) as conn:
            token = state.get("admin_token")
            if token and conn.execute(
                "SELECT 1 FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > now())", (hash_token(token),),
            ).fetchone():
                return token
            token = create_token(conn, "demo-admin", "admin", name="ygg demo")
        state["admin_token"] = token
        return token

    def tenant_spec(self, tenant: DemoTenant) -> ProcessSpec:
        port = self.ports[tenant.id]
        dsn = self.tenant_dsn(tenant)
        return ProcessSpec(
            name=tenant.process_name,
            argv=[sys.executable, "-m", "yggdrasil", "tenant", "serve",
                  "--host", HOST, "--port", str(port), "--dsn", dsn,
                  # The demo migrated already; a restart after a crash should be quick.
                  "--no-migrate"],
            env={"YGG_TENANT_ID": tenant.id, "YGG_TENANT_NAME": tenant.name, "YGG_TENANT_DSN": dsn,
                 "YGG_HOST": HOST, "YGG_PORT": str(port)},
            log_file=self.logs / tenant.log_name,
            health_url=f"{self.tenant_url(tenant)}/health",
            stage=20,
        )

    def start_tenants(self) -> None:
        assert self.supervisor is not None
        for tenant in self.tenants:
            self.supervisor.add(self.tenant_spec(tenant))
        # Later issues add their processes here, one spec each, e.g. stage 10 for the broker
        # (EmbeddedSpec with EmbeddedNats), 30 for sidecars, 40 for the mesh server and portal.
        self.supervisor.start_all()

    def seed(self) -> None:
        for tenant in self.tenants:
            state = self._tenant_state(tenant)
            if state.get("seeded"):
                continue
            partners = [(t.id, t.name) for t in self.tenants if t.id != tenant.id]
            log.info("%s: seeding sample data", tenant.id)
            with httpx.Client(base_url=self.tenant_url(tenant), timeout=30.0,
                              headers={"Authorization": f"Bearer {self.tokens[tenant.id]}"}) as http:
                counts = seed_tenant(http, tenant.id, partners)
            log.info("%s: seeded %s", tenant.id, ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
            state["seeded"] = True
            self._save_state()

    def mark_seeded(self) -> None:
        """--no-seed: the databases are complete as they are; a later run must not recreate them."""
        for tenant in self.tenants:
            self._tenant_state(tenant)["seeded"] = True
        self._save_state()

    # -- stack.json -------------------------------------------------------------------------------

    def stack_document(self) -> dict[str, Any]:
        assert self.postgres is not None and self.supervisor is not None
        pids = self.supervisor.pids()
        processes: dict[str, int | None] = {c.name: pids.get(c.name) for c in self.supervisor.children}
        return {
            "status": "running",
            "started_at": self.started_at,
            "supervisor_pid": os.getpid(),
            "state_dir": str(self.state_dir),
            "postgres": {"dsn": self.postgres.dsn(), "pid": pids.get("postgres"), "host": HOST,
                         "port": self.postgres.port, "data_dir": str(self.postgres.data_dir)},
            "broker": None,
            "mesh": None,
            "portal": None,
            "tenants": [
                {"id": t.id, "name": t.name, "url": self.tenant_url(t), "dsn": self.tenant_dsn(t),
                 "admin_token": self.tokens[t.id], "database": t.database,
                 "log": str(self.logs / t.log_name)}
                for t in self.tenants
            ],
            "processes": processes,
            "restarts": {c.name: c.restarts for c in self.supervisor.children},
        }

    def write_stack_file(self) -> None:
        if self.published:
            write_json_atomically(self.stack_file, self.stack_document())

    def publish(self) -> None:
        self.published = True
        self.write_stack_file()

    def stop(self) -> None:
        """Stop every process, then remove stack.json (it would describe processes that are
        gone). Databases, logs and demo-state.json stay for the next run."""
        self.published = False
        if self.supervisor is not None:
            self.supervisor.stop_all()
        with contextlib.suppress(FileNotFoundError):
            self.stack_file.unlink()


# -- output -------------------------------------------------------------------------------------

def _configure_logging(logs: Path) -> None:
    from rich.logging import RichHandler

    console = RichHandler(show_path=False, log_time_format="%H:%M:%S")
    console.setLevel(logging.INFO)
    file = logging.FileHandler(logs / "demo.log")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [console, file]
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_summary(stack: DemoStack) -> None:
    from rich.console import Console

    # soft_wrap: tokens and URLs stay on one line, so they can be copied.
    console = Console(soft_wrap=True, highlight=False)
    document = stack.stack_document()
    console.print()
    console.print("[bold]Yggdrasil demo stack is running[/bold]")
    for tenant in document["tenants"]:
        pid = document["processes"].get(f"tenant:{tenant['id']}")
        console.print(f"  [bold]{tenant['id']}[/bold] ({tenant['name']})  {tenant['url']}  "
                      f"API docs {tenant['url']}/docs  pid {pid}")
        console.print(f"      admin token  {tenant['admin_token']}")
    console.print(f"  PostgreSQL  {document['postgres']['dsn']}  pid {document['postgres']['pid']}")
    console.print(f"  stack.json  {stack.stack_file}")
    console.print(f"  logs        {stack.logs}/")
    first = document["tenants"][0]
    console.print(f"  try         curl -H 'Authorization: Bearer {first['admin_token']}' "
                  f"{first['url']}/api/v1/sales-orders")
    console.print("Ctrl-C stops everything.", style="bold")
    console.print()


# -- entry point --------------------------------------------------------------------------------

def run_demo(state_dir: Path, tenants: int | Sequence[DemoTenant] = 2, seed: bool = True) -> int:
    """Run the demo stack until SIGINT/SIGTERM/SIGHUP; return the exit code (0 on a clean stop,
    1 if the stack could not start). Nothing it started is left running when it returns."""
    state_dir = Path(state_dir).absolute()
    chosen = demo_tenants(tenants) if isinstance(tenants, int) else tuple(tenants)
    for tenant in chosen:
        if not re.fullmatch(r"[a-z][a-z0-9-]{1,62}", tenant.id):
            raise ValueError(f"invalid tenant id {tenant.id!r}")
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(exist_ok=True)
    _configure_logging(state_dir / "logs")

    stack = DemoStack(state_dir, chosen)
    stack.guard.install()
    code = 0
    try:
        stack.start_postgres()
        stack.prepare_tenant_databases()
        stack.start_tenants()
        if seed:
            stack.seed()
        else:
            stack.mark_seeded()
        stack.publish()
        _print_summary(stack)
        assert stack.supervisor is not None
        stack.supervisor.run()
    except Shutdown as stop:
        log.info("received %s; stopping everything", stop)
    except (StartupFailed, SeedError, psycopg.Error, db.MigrationError, httpx.HTTPError, OSError) as exc:
        log.error("the demo stack could not start: %s", exc)
        code = 1
    finally:
        stack.guard.ignore()
        try:
            stack.stop()
        finally:
            stack.guard.restore()
    log.info("stopped")
    return code
