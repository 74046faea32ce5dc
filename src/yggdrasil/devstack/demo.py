"""`ygg demo`: the whole system on 127.0.0.1, supervised, with sample data.

What lives in STATE_DIR:

    postgres/            the embedded cluster (kept between runs; its log is postgres/server.log)
    broker/              the embedded nats-server: config, nats.log, JetStream store
    keys/<tenant>.key    each tenant's Ed25519 signing key (mode 0600)
    logs/<process>.log   one log per supervised process (tenant-acme.log, sidecar-acme.log, ...)
                         and demo.log
    demo-state.json      what a later run reuses: ports, admin tokens, broker passwords, which
                         tenants are seeded, the mesh admin token, the portal owners' passwords
    stack.json           only while the stack runs: URLs, DSNs, tokens and pids, for scripts

The first run creates one database per tenant, migrates it and seeds sample data through the
tenant's API; later runs reuse all of it (migrations are applied again, which is a no-op when
nothing is new). A tenant whose seeding did not finish is recreated from scratch next time.

The tenants trade with each other: each is registered as the others' partner (approval `auto`,
so orders flow without a person), buyers map the sellers' SKUs to their own items, and every
seller sends each partner a few sales orders, which arrive there as purchase orders. The
broker runs with one user per tenant (broker/permissions.py); streams and consumers are
declared with its admin user before the sidecars start.

The coordination plane runs too: the `ygg_central` database on the same PostgreSQL, the mesh
server and the customer portal (stage 40). Every tenant is in the mesh registry with an active
partnership to each other one, and the sidecars sync their partner copy from the mesh (and
trade on that copy while the mesh is down). Each tenant has an organization in the portal that
owns it, with an owner login, a subscription and a sample ticket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
from nats.errors import Error as NatsError

from yggdrasil import db
from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.devstack.postgres import EmbeddedPostgres
from yggdrasil.devstack.ports import free_port
from yggdrasil.devstack.seed import (
    PortalOwner,
    RegistryTenant,
    SeedError,
    owner_email,
    register_in_mesh,
    seed_portal_organization,
    seed_tenant,
    seed_trade_orders,
    seed_trade_purchase_order,
    traded_items,
)
from yggdrasil.devstack.supervisor import (
    EmbeddedSpec,
    ProcessSpec,
    Shutdown,
    SignalGuard,
    StartupFailed,
    Supervisor,
)
from yggdrasil.devstack.view import ActivityMonitor, ChangeLogger, ProcessState, StackActivity, render_activity
from yggdrasil.federation.keys import SigningKeyError
from yggdrasil.files import replace_file
from yggdrasil.mesh.errors import MeshError
from yggdrasil.portal.errors import PortalError

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger("ygg.demo")

HOST = "127.0.0.1"
STACK_FILE = "stack.json"
STATE_FILE = "demo-state.json"
TENANT_MIGRATIONS = "yggdrasil.tenant"
CENTRAL_DATABASE = "ygg_central"
CENTRAL_MIGRATIONS = "yggdrasil.central"
# The sidecars' registry sync: shorter than the default 30 s (and backing off to 15 s at most
# while the mesh is down), so that a change at the mesh shows within seconds in the demo.
REGISTRY_SYNC_INTERVAL_SECONDS = 5.0
REGISTRY_SYNC_BACKOFF_MAX_SECONDS = 15.0
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

    @property
    def organization(self) -> str:
        """The slug of the portal organization that owns the tenant."""
        return self.id

    @property
    def sidecar_name(self) -> str:
        return f"sidecar:{self.id}"

    @property
    def sidecar_log_name(self) -> str:
        return f"sidecar-{self.id}.log"


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
    """Readers see the old file or the new one, never half of one. Mode 0600: it holds tokens."""
    replace_file(path, json.dumps(data, indent=2) + "\n")


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
        self.state.setdefault("broker", {})
        self.state.setdefault("mesh", {})
        self.state.setdefault("portal", {}).setdefault("owners", {})
        self.keys = state_dir / "keys"
        self.public_keys: dict[str, str] = {}
        self.guard = SignalGuard()
        self.postgres: EmbeddedPostgres | None = None
        self.broker: EmbeddedNats | None = None
        self.supervisor: Supervisor | None = None
        # Pids and restart counts as of the supervisor's last change, for the activity view's
        # thread (which must not poll the children itself).
        self.process_states: dict[str, ProcessState] = {}
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

    def key_path(self, tenant: DemoTenant) -> Path:
        return self.keys / f"{tenant.id}.key"

    def broker_password(self, tenant: DemoTenant) -> str:
        return self._tenant_state(tenant)["broker_password"]

    @property
    def broker_admin_password(self) -> str:
        return self.state["broker"]["admin_password"]

    def partners_of(self, tenant: DemoTenant) -> list[DemoTenant]:
        return [t for t in self.tenants if t.id != tenant.id]

    @property
    def central_dsn(self) -> str:
        assert self.postgres is not None
        return self.postgres.dsn(CENTRAL_DATABASE)

    @property
    def mesh_url(self) -> str:
        return f"http://{HOST}:{self.ports['mesh']}"

    @property
    def portal_url(self) -> str:
        return f"http://{HOST}:{self.ports['portal']}"

    def portal_owner(self, tenant: DemoTenant) -> PortalOwner:
        owners = self.state["portal"]["owners"]
        if tenant.id not in owners:
            from yggdrasil.portal.domain.accounts import generate_password

            owners[tenant.id] = {"email": owner_email(tenant.id), "password": generate_password()}
        entry = owners[tenant.id]
        return PortalOwner(tenant.id, tenant.organization, entry["email"], entry["password"])

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
            guard=self.guard, on_change=lambda _: self._changed(),
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
                for stale in ("admin_token", "items_mapped_from", "trade_seeded_to"):
                    state.pop(stale, None)
            applied = db.apply_migrations(self.tenant_dsn(tenant), TENANT_MIGRATIONS)
            if applied:
                log.info("%s: applied migrations %s", tenant.id, ", ".join(f"{m.version:04d}" for m in applied))
            self.tokens[tenant.id] = self._admin_token(tenant, state)
            self.ports[tenant.id] = _reuse_port(state.get("port"), self.claimed_ports)
            state["port"] = self.ports[tenant.id]
        self._save_state()

    def _admin_token(self, tenant: DemoTenant, state: dict[str, Any]) -> str:
        from yggdrasil.tenant.auth import create_token, hash_token, token_tenant

        with psycopg.connect(self.tenant_dsn(tenant)) as conn:
            token = state.get("admin_token")
            # A token of the older form names no tenant, so the mesh's proxy would refuse it.
            if token and token_tenant(token) == tenant.id and conn.execute(
                "SELECT 1 FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > now())", (hash_token(token),),
            ).fetchone():
                return token
            token = create_token(conn, "demo-admin", "admin", name="ygg demo", tenant_id=tenant.id)
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
            env={**self.federation_env(tenant), "YGG_HOST": HOST, "YGG_PORT": str(port)},
            log_file=self.logs / tenant.log_name,
            health_url=f"{self.tenant_url(tenant)}/health",
            stage=20,
        )

    def federation_env(self, tenant: DemoTenant) -> dict[str, str]:
        """What the tenant server and the sidecar share: who the tenant is, its database, its
        signing key and its broker credentials."""
        assert self.broker is not None
        return {"YGG_TENANT_ID": tenant.id, "YGG_TENANT_NAME": tenant.name, "YGG_TENANT_DSN": self.tenant_dsn(tenant),
                "YGG_SIGNING_KEY_PATH": str(self.key_path(tenant)), "YGG_BROKER_URL": self.broker.url,
                "YGG_BROKER_USER": tenant.id, "YGG_BROKER_PASSWORD": self.broker_password(tenant)}

    def sidecar_spec(self, tenant: DemoTenant) -> ProcessSpec:
        return ProcessSpec(
            name=tenant.sidecar_name,
            argv=[sys.executable, "-m", "yggdrasil", "sidecar", "run"],
            # The sidecar syncs its partner registry from the mesh (which starts one stage later:
            # the first sync fails and is retried, trading runs on the copy meanwhile).
            env={**self.federation_env(tenant), "YGG_MESH_URL": self.mesh_url,
                 "YGG_REGISTRY_SYNC_INTERVAL_SECONDS": str(REGISTRY_SYNC_INTERVAL_SECONDS),
                 "YGG_REGISTRY_SYNC_BACKOFF_MAX_SECONDS": str(REGISTRY_SYNC_BACKOFF_MAX_SECONDS)},
            log_file=self.logs / tenant.sidecar_log_name,
            stage=30,
            # The sidecar lets both loops finish their batch on SIGTERM (up to 10 s).
            stop_timeout=15.0,
        )

    def central_env(self) -> dict[str, str]:
        return {"YGG_CENTRAL_DSN": self.central_dsn}

    def mesh_spec(self) -> ProcessSpec:
        port = self.ports["mesh"]
        return ProcessSpec(
            name="mesh",
            argv=[sys.executable, "-m", "yggdrasil", "mesh", "serve", "--host", HOST, "--port", str(port),
                  "--dsn", self.central_dsn, "--no-migrate"],  # migrated by prepare_central
            env={**self.central_env(), "YGG_MESH_HOST": HOST, "YGG_MESH_PORT": str(port)},
            log_file=self.logs / "mesh.log",
            health_url=f"{self.mesh_url}/health",
            # After the tenant servers it polls, before the sidecars that sync from it.
            stage=25,
        )

    def portal_spec(self) -> ProcessSpec:
        port = self.ports["portal"]
        return ProcessSpec(
            name="portal",
            argv=[sys.executable, "-m", "yggdrasil", "portal", "serve", "--host", HOST, "--port", str(port),
                  "--dsn", self.central_dsn, "--no-migrate"],
            env={**self.central_env(), "YGG_PORTAL_HOST": HOST, "YGG_PORTAL_PORT": str(port)},
            log_file=self.logs / "portal.log",
            health_url=f"{self.portal_url}/health",
            stage=40,
        )

    def start_processes(self) -> None:
        """Tenant servers (stage 20), the mesh server (25: it polls the tenants' health, and the
        sidecars sync their partner registry from it), one sidecar per tenant (30), the portal (40)."""
        assert self.supervisor is not None
        for tenant in self.tenants:
            self.supervisor.add(self.tenant_spec(tenant))
            self.supervisor.add(self.sidecar_spec(tenant))
        self.supervisor.add(self.mesh_spec())
        self.supervisor.add(self.portal_spec())
        self.supervisor.start_all()

    # -- the coordination plane -------------------------------------------------------------------

    def prepare_central(self, sample_ticket: bool = True) -> None:
        """The `ygg_central` database (created if missing, migrated), ports for the mesh and the
        portal, a mesh admin token, every tenant in the mesh registry with an active partnership
        between each pair, and per tenant a portal organization owning it with an owner login,
        a subscription and (with `sample_ticket`) a sample ticket. Only what is missing is added."""
        assert self.postgres is not None
        admin_dsn = self.postgres.dsn()
        if not db.database_exists(admin_dsn, CENTRAL_DATABASE):
            db.create_database(admin_dsn, CENTRAL_DATABASE)
            log.info("created database %s", CENTRAL_DATABASE)
        applied = db.apply_migrations(self.central_dsn, CENTRAL_MIGRATIONS)
        if applied:
            log.info("%s: applied migrations %s", CENTRAL_DATABASE, ", ".join(f"{m.version:04d}" for m in applied))
        for name in ("mesh", "portal"):
            self.ports[name] = _reuse_port(self.state[name].get("port"), self.claimed_ports)
            self.state[name]["port"] = self.ports[name]
        self.state["mesh"]["admin_token"] = self._mesh_admin_token(self.state["mesh"].get("admin_token"))
        owners = [self.portal_owner(t) for t in self.tenants]
        self._save_state()
        asyncio.run(self._seed_central(owners, sample_ticket))

    def _mesh_admin_token(self, token: str | None) -> str:
        """The token of the last run if it is still valid (not revoked), else a new one."""
        from yggdrasil.mesh.adapters.admin_tokens import create_admin_token, hash_token

        with psycopg.connect(self.central_dsn) as conn:
            if token and conn.execute("SELECT 1 FROM mesh_admin_tokens WHERE token_hash = %s AND revoked_at IS NULL",
                                      (hash_token(token),)).fetchone():
                return token
            log.info("created a mesh admin token")
            return create_admin_token(conn, "ygg demo")

    async def _seed_central(self, owners: list[PortalOwner], sample_ticket: bool) -> None:
        from yggdrasil.portal.adapters import connect
        from yggdrasil.portal.domain.accounts import Passwords
        from yggdrasil.settings import Settings

        entries = [RegistryTenant(t.id, t.name, self.tenant_url(t), self.public_keys[t.id],
                                  # where the broker password is kept, never the password
                                  broker_credentials_ref=f"{self.state_file}#tenants.{t.id}.broker_password")
                   for t in self.tenants]
        settings = Settings()
        passwords = Passwords(settings.portal_argon2_time_cost, settings.portal_argon2_memory_kib,
                              settings.portal_argon2_parallelism)
        async with await connect(self.central_dsn) as conn:
            for line in await register_in_mesh(conn, entries):
                log.info("mesh: %s", line)
            for tenant, owner in zip(self.tenants, owners, strict=True):
                for line in await seed_portal_organization(conn, passwords, tenant.id, tenant.name, owner,
                                                           sample_ticket=sample_ticket):
                    log.info("portal: %s", line)

    # -- federation -------------------------------------------------------------------------------

    def prepare_federation(self) -> None:
        """A signing key per tenant (kept in STATE_DIR/keys), broker passwords, and every tenant
        registered in the others' partner registry with its public key. Once the sidecars have
        synced from the mesh, the mesh's partnerships govern these rows (source `mesh`)."""
        from yggdrasil.events.signing import encode_public_key, generate_keypair
        from yggdrasil.federation.keys import load_signing_key, write_signing_key

        for tenant in self.tenants:
            path = self.key_path(tenant)
            if not path.exists():
                write_signing_key(path, generate_keypair()[0])
                log.info("%s: generated signing key %s", tenant.id, path)
            self.public_keys[tenant.id] = encode_public_key(load_signing_key(path).public_key())
            self._tenant_state(tenant).setdefault("broker_password", secrets.token_urlsafe(24))
        self.state["broker"].setdefault("admin_password", secrets.token_urlsafe(24))
        self._save_state()
        asyncio.run(self._register_partners())

    async def _register_partners(self) -> None:
        from yggdrasil.federation.partners import add_partner

        for tenant in self.tenants:
            async with await psycopg.AsyncConnection.connect(self.tenant_dsn(tenant), autocommit=True) as conn:
                cur = await conn.execute("SELECT tenant_id, public_key FROM b2b_partners")
                registered = dict(await cur.fetchall())
                for partner in self.partners_of(tenant):
                    # A partner already registered with this key keeps its policy and status:
                    # someone may have switched it to `approve` since the last run.
                    if registered.get(partner.id) == self.public_keys[partner.id]:
                        continue
                    await add_partner(conn, tenant_id=partner.id, public_key=self.public_keys[partner.id],
                                      name=partner.name, approval_policy="auto")
                    log.info("%s: registered %s as a partner (approval auto)", tenant.id, partner.id)

    def start_broker(self) -> None:
        """nats-server with one user per tenant (stage 10), and the declared streams and
        consumers, created with the admin user before any sidecar connects."""
        from yggdrasil.broker.permissions import render_auth_config

        assert self.supervisor is not None
        state = self.state["broker"]
        state["port"] = _reuse_port(state.get("port"), self.claimed_ports)
        state["monitor_port"] = _reuse_port(state.get("monitor_port"), self.claimed_ports)
        self._save_state()
        auth = render_auth_config({t.id: self.broker_password(t) for t in self.tenants},
                                  admin_password=self.broker_admin_password)
        self.broker = EmbeddedNats(self.state_dir / "broker", port=state["port"], host=HOST,
                                   monitor_port=state["monitor_port"], auth_config=auth, die_with_parent=True)
        self.supervisor.add(EmbeddedSpec("broker", self.broker, log_file=self.broker.log_path, stage=10,
                                         stop_timeout=15.0))
        log.info("starting nats-server on %s (store in %s)", self.broker.url, self.broker.store_dir)
        self.supervisor.start_all()
        asyncio.run(self._declare_streams())

    async def _declare_streams(self, timeout: float = 15.0) -> None:
        import nats
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeoutError
        from nats.js.errors import ServiceUnavailableError

        from yggdrasil.broker.permissions import ADMIN_USER
        from yggdrasil.broker.streams import declared_consumers, ensure_consumers, ensure_streams

        assert self.broker is not None
        nc = await nats.connect(self.broker.url, user=ADMIN_USER, password=self.broker_admin_password,
                                allow_reconnect=False, connect_timeout=5, max_reconnect_attempts=1)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    await ensure_streams(js)
                    break
                except (NoRespondersError, ServiceUnavailableError, NatsTimeoutError):
                    # The server listens before JetStream has recovered its store (a large
                    # store after a crash takes a moment): ask again until it answers.
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            await ensure_consumers(js, declared_consumers([t.id for t in self.tenants]))
        finally:
            await nc.close()

    def seed_trade(self) -> None:
        """Partners map each other's SKUs to their items; then every seller sends each partner a
        few sales orders, and every buyer sends each partner a purchase order, through the API
        (each change an outbox event). Once per pair."""
        asyncio.run(self._map_partner_items())
        for seller in self.tenants:
            state = self._tenant_state(seller)
            done = set(state.get("trade_seeded_to", []))
            for buyer in self.partners_of(seller):
                if buyer.id in done:
                    continue
                skus = [sold for sold, _ in traded_items(buyer.id, seller.id)]
                try:
                    with httpx.Client(base_url=self.tenant_url(seller), timeout=30.0,
                                      headers={"Authorization": f"Bearer {self.tokens[seller.id]}"}) as http:
                        count = seed_trade_orders(http, buyer.id, skus)
                except SeedError as exc:
                    # E.g. a tenant seeded by an older demo, without today's catalogue: the stack
                    # runs all the same, without this sample trade.
                    log.warning("%s: no sample orders for %s: %s", seller.id, buyer.id, exc)
                    continue
                log.info("%s: sent %d sample sales orders to %s", seller.id, count, buyer.id)
                done.add(buyer.id)
                state["trade_seeded_to"] = sorted(done)
                self._save_state()
        for buyer in self.tenants:
            state = self._tenant_state(buyer)
            done = set(state.get("purchase_orders_sent_to", []))
            for seller in self.partners_of(buyer):
                if seller.id in done:
                    continue
                skus = [bought for _, bought in traded_items(buyer.id, seller.id)]
                try:
                    with httpx.Client(base_url=self.tenant_url(buyer), timeout=30.0,
                                      headers={"Authorization": f"Bearer {self.tokens[buyer.id]}"}) as http:
                        seed_trade_purchase_order(http, seller.id, skus)
                except SeedError as exc:
                    log.warning("%s: no sample purchase order for %s: %s", buyer.id, seller.id, exc)
                    continue
                log.info("%s: sent a sample purchase order to %s", buyer.id, seller.id)
                done.add(seller.id)
                state["purchase_orders_sent_to"] = sorted(done)
                self._save_state()

    async def _map_partner_items(self) -> None:
        """Each side of a trading pair maps the other's SKUs to its own items: the buyer for the
        seller's sales orders, the seller for the buyer's purchase orders."""
        for buyer in self.tenants:
            for seller in self.partners_of(buyer):
                pairs = traded_items(buyer.id, seller.id)
                await self._map_items(buyer, seller, pairs, "items_mapped_from")
                await self._map_items(seller, buyer, tuple((b, s) for s, b in pairs), "buyer_items_mapped_from")

    async def _map_items(self, owner: DemoTenant, partner: DemoTenant, pairs: tuple[tuple[str, str], ...],
                         state_key: str) -> None:
        """Record in `owner`'s cross-reference that `partner`'s SKU means `owner`'s item, once."""
        from yggdrasil.federation.partners import map_partner_item

        state = self._tenant_state(owner)
        done = set(state.get(state_key, []))
        if partner.id in done:
            return
        async with await psycopg.AsyncConnection.connect(self.tenant_dsn(owner), autocommit=True) as conn:
            try:
                for partner_sku, item_sku in pairs:
                    await map_partner_item(conn, tenant_id=partner.id, partner_sku=partner_sku, item_sku=item_sku)
            except LookupError as exc:
                log.warning("%s: cannot map %s's SKUs (%s); its orders will wait for approval",
                            owner.id, partner.id, exc)
                return
        log.info("%s: mapped %s's SKUs %s", owner.id, partner.id, ", ".join(f"{a} -> {b}" for a, b in pairs))
        done.add(partner.id)
        state[state_key] = sorted(done)
        self._save_state()

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
            "broker": self.broker_document(pids.get("broker")),
            "mesh": self.mesh_document(pids.get("mesh")),
            "portal": self.portal_document(pids.get("portal")),
            "tenants": [
                {"id": t.id, "name": t.name, "url": self.tenant_url(t), "dsn": self.tenant_dsn(t),
                 "admin_token": self.tokens[t.id], "database": t.database,
                 "log": str(self.logs / t.log_name), "sidecar_log": str(self.logs / t.sidecar_log_name),
                 "signing_key_path": str(self.key_path(t)), "public_key": self.public_keys.get(t.id),
                 "broker_user": t.id, "broker_password": self.broker_password(t)}
                for t in self.tenants
            ],
            "processes": processes,
            "restarts": {c.name: c.restarts for c in self.supervisor.children},
        }

    def broker_document(self, pid: int | None) -> dict[str, Any] | None:
        from yggdrasil.broker.permissions import ADMIN_USER

        if self.broker is None:
            return None
        return {"url": self.broker.url, "pid": pid, "store_dir": str(self.broker.store_dir),
                "monitor_url": f"http://{HOST}:{self.broker.monitor_port}", "log": str(self.broker.log_path),
                "admin_user": ADMIN_USER, "admin_password": self.broker_admin_password}

    def mesh_document(self, pid: int | None) -> dict[str, Any] | None:
        if "mesh" not in self.ports:
            return None
        return {"url": self.mesh_url, "pid": pid, "health_url": f"{self.mesh_url}/health",
                "docs_url": f"{self.mesh_url}/docs", "admin_token": self.state["mesh"]["admin_token"],
                "dsn": self.central_dsn, "log": str(self.logs / "mesh.log")}

    def portal_document(self, pid: int | None) -> dict[str, Any] | None:
        if "portal" not in self.ports:
            return None
        return {"url": self.portal_url, "pid": pid, "health_url": f"{self.portal_url}/health",
                "docs_url": f"{self.portal_url}/docs", "dsn": self.central_dsn,
                "log": str(self.logs / "portal.log"),
                "owners": [{"tenant": t.id, "organization": owner.organization, "email": owner.email,
                            "password": owner.password}
                           for t in self.tenants for owner in [self.portal_owner(t)]]}

    def _changed(self) -> None:
        """After every start, restart and death of a child."""
        assert self.supervisor is not None
        pids = self.supervisor.pids()
        self.process_states = {c.name: ProcessState(pids.get(c.name), c.restarts) for c in self.supervisor.children}
        self.write_stack_file()

    def write_stack_file(self) -> None:
        if self.published:
            write_json_atomically(self.stack_file, self.stack_document())

    def publish(self) -> None:
        self.published = True
        self.write_stack_file()

    def supervise(self, console: Console, view: bool) -> None:
        """Keep the stack running until a signal, showing the tenants' federation activity: a
        live table on a terminal, else (or with view=False) a log line whenever it changes."""
        assert self.supervisor is not None
        targets = [(t.id, self.tenant_dsn(t)) for t in self.tenants]

        def processes() -> dict[str, ProcessState]:
            return self.process_states

        if view and console.is_terminal:
            from rich.live import Live

            with Live(console=console, refresh_per_second=4) as live:
                def show(activity: StackActivity) -> None:
                    live.update(render_activity(activity, height=console.height))

                monitor = ActivityMonitor(targets, show, processes)
                monitor.start()
                try:
                    self.supervisor.run()
                finally:
                    monitor.stop()
            return
        if view:
            log.info("output is not a terminal: activity is logged instead of shown live")
        monitor = ActivityMonitor(targets, ChangeLogger(), processes)
        monitor.start()
        try:
            self.supervisor.run()
        finally:
            monitor.stop()

    def stop(self) -> None:
        """Stop every process, then remove stack.json (it would describe processes that are
        gone). Databases, logs and demo-state.json stay for the next run."""
        self.published = False
        if self.supervisor is not None:
            self.supervisor.stop_all()
        with contextlib.suppress(FileNotFoundError):
            self.stack_file.unlink()


# -- output -------------------------------------------------------------------------------------

def _configure_logging(logs: Path, console: Console) -> None:
    from rich.logging import RichHandler

    # The same console as the live view, so that log lines appear above the table.
    handler = RichHandler(console=console, show_path=False, log_time_format="%H:%M:%S")
    handler.setLevel(logging.INFO)
    file = logging.FileHandler(logs / "demo.log")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler, file]
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_summary(stack: DemoStack, console: Console) -> None:
    document = stack.stack_document()

    def say(text: str = "") -> None:
        # soft_wrap: tokens and URLs stay on one line, so they can be copied.
        console.print(text, soft_wrap=True, highlight=False)
    say()
    say("[bold]Yggdrasil demo stack is running[/bold]")
    for tenant in document["tenants"]:
        pid = document["processes"].get(f"tenant:{tenant['id']}")
        sidecar = document["processes"].get(f"sidecar:{tenant['id']}")
        say(f"  [bold]{tenant['id']}[/bold] ({tenant['name']})  {tenant['url']}  "
            f"API docs {tenant['url']}/docs  pid {pid}  sidecar pid {sidecar}")
        say(f"      admin token  {tenant['admin_token']}")
    say(f"  PostgreSQL  {document['postgres']['dsn']}  pid {document['postgres']['pid']}")
    broker = document["broker"]
    say(f"  broker      {broker['url']}  pid {broker['pid']}  monitoring {broker['monitor_url']}")
    mesh, portal = document["mesh"], document["portal"]
    say(f"  mesh        {mesh['url']}  API docs {mesh['docs_url']}  pid {mesh['pid']}")
    say(f"      admin token  {mesh['admin_token']}")
    say(f"  portal      {portal['url']}  pid {portal['pid']}")
    for owner in portal["owners"]:
        say(f"      sign in  {owner['email']}  password {owner['password']}  (owner of {owner['organization']})")
    say(f"  stack.json  {stack.stack_file}")
    say(f"  logs        {stack.logs}/")
    first = document["tenants"][0]
    say(f"  try         curl -H 'Authorization: Bearer {first['admin_token']}' "
        f"{first['url']}/api/v1/sales-orders")
    say(f"  mesh        curl -H 'Authorization: Bearer {mesh['admin_token']}' {mesh['url']}/api/v1/health/tenants")
    if len(document["tenants"]) > 1:
        second = document["tenants"][1]
        say(f"  partners    approve automatically: the partnerships are the mesh's, synced to the sidecars. To make "
            f"{first['id']} and {second['id']} wait for a person, end theirs at the mesh and propose it again "
            f"with approval_policy approve ({mesh['url']}/api/v1/partnerships, see {mesh['docs_url']})")
    say(f"  broker      YGG_BROKER_URL={broker['url']} YGG_BROKER_ADMIN_PASSWORD={broker['admin_password']} "
        "ygg broker check")
    say("[bold]Ctrl-C stops everything.[/bold]")
    say()


# -- entry point --------------------------------------------------------------------------------

def run_demo(state_dir: Path, tenants: int | Sequence[DemoTenant] = 2, seed: bool = True, view: bool = True) -> int:
    """Run the demo stack until SIGINT/SIGTERM/SIGHUP; return the exit code (0 on a clean stop,
    1 if the stack could not start). Nothing it started is left running when it returns.
    `view`: a live table of the tenants' federation activity on a terminal (else log lines)."""
    from rich.console import Console

    state_dir = Path(state_dir).absolute()
    chosen = demo_tenants(tenants) if isinstance(tenants, int) else tuple(tenants)
    for tenant in chosen:
        if not re.fullmatch(r"[a-z][a-z0-9-]{1,62}", tenant.id):
            raise ValueError(f"invalid tenant id {tenant.id!r}")
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(exist_ok=True)
    console = Console()
    if not console.is_terminal:
        # A log file or CI output: keep each line whole instead of wrapping it at 80 columns.
        console = Console(width=200)
    _configure_logging(state_dir / "logs", console)

    stack = DemoStack(state_dir, chosen)
    stack.guard.install()
    code = 0
    try:
        stack.start_postgres()
        stack.prepare_tenant_databases()
        stack.prepare_federation()
        stack.prepare_central(sample_ticket=seed)
        stack.start_broker()
        stack.start_processes()
        if seed:
            stack.seed()
            stack.seed_trade()
        else:
            stack.mark_seeded()
        stack.publish()
        _print_summary(stack, console)
        stack.supervise(console, view)
    except Shutdown as stop:
        log.info("received %s; stopping everything", stop)
    except (StartupFailed, SeedError, psycopg.Error, db.MigrationError, httpx.HTTPError, OSError, NatsError,
            SigningKeyError, MeshError, PortalError) as exc:
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
