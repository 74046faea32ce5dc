"""Fixtures shared by every tier.

PostgreSQL: one throwaway cluster per test session (pgserver's binaries, 127.0.0.1, a random
port), or the server named by YGG_TEST_ADMIN_DSN. The tenant migrations are applied once to a
template database; each test gets a fresh copy of it (CREATE DATABASE ... TEMPLATE), which costs
a file copy, not a migration run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from yggdrasil import db
from yggdrasil.settings import Settings

TEMPLATE_DB = "ygg_tenant_template"
CENTRAL_TEMPLATE_DB = "ygg_central_template"


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("YGG_TEST_ADMIN_DSN")
    if external:
        yield external
        return
    from yggdrasil.devstack.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    try:
        yield server.dsn()
    finally:
        server.stop()


def migrated_template(admin_dsn: str, name: str, package: str) -> str:
    """(Re)create database `name` with `package`'s migrations applied, to copy per test."""
    db.drop_database(admin_dsn, name)
    db.create_database(admin_dsn, name)
    db.apply_migrations(db.dsn_with_database(admin_dsn, name), package)
    return name


@contextmanager
def database_from_template(admin_dsn: str, template: str, prefix: str = "ygg_test") -> Iterator[str]:
    """A fresh copy of `template` (a file copy, not a migration run), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    db.create_database(admin_dsn, name, template=template)
    try:
        yield db.dsn_with_database(admin_dsn, name)
    finally:
        db.drop_database(admin_dsn, name)


@pytest.fixture(scope="session")
def tenant_template(pg_admin_dsn: str) -> str:
    return migrated_template(pg_admin_dsn, TEMPLATE_DB, "yggdrasil.tenant")


@pytest.fixture
def tenant_dsn(pg_admin_dsn: str, tenant_template: str) -> Iterator[str]:
    """A fresh, migrated tenant database for this test."""
    with database_from_template(pg_admin_dsn, tenant_template) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def central_template(pg_admin_dsn: str) -> str:
    from yggdrasil.central import PACKAGE

    return migrated_template(pg_admin_dsn, CENTRAL_TEMPLATE_DB, PACKAGE)


@pytest.fixture
def central_dsn(pg_admin_dsn: str, central_template: str) -> Iterator[str]:
    """A fresh, migrated `ygg_central` database (mesh registry and portal) for this test."""
    with database_from_template(pg_admin_dsn, central_template, prefix="ygg_central_test") as dsn:
        yield dsn


def make_settings(tenant_dsn: str, **overrides: object) -> Settings:
    return Settings(tenant_dsn=tenant_dsn, tenant_id="acme", log_json=False, **overrides)


@dataclass
class ApiClient:
    """An in-process tenant server on a real database, with a token per role."""

    http: httpx.AsyncClient
    tokens: dict[str, str]
    dsn: str

    def as_role(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def request(self, method: str, url: str, role: str = "admin", **kwargs: object) -> httpx.Response:
        headers = {**self.as_role(role), **kwargs.pop("headers", {})}  # type: ignore[arg-type]
        return await self.http.request(method, url, headers=headers, **kwargs)

    async def get(self, url: str, role: str = "admin", **kwargs: object) -> httpx.Response:
        return await self.request("GET", url, role, **kwargs)

    async def post(self, url: str, role: str = "admin", **kwargs: object) -> httpx.Response:
        return await self.request("POST", url, role, **kwargs)

    async def patch(self, url: str, role: str = "admin", **kwargs: object) -> httpx.Response:
        return await self.request("PATCH", url, role, **kwargs)

    async def delete(self, url: str, role: str = "admin", **kwargs: object) -> httpx.Response:
        return await self.request("DELETE", url, role, **kwargs)


def create_role_tokens(dsn: str) -> dict[str, str]:
    from yggdrasil.tenant.auth import ROLES, create_token

    with psycopg.connect(dsn) as conn:
        return {role: create_token(conn, f"{role}-user", role, tenant_id="acme") for role in ROLES}


@asynccontextmanager
async def open_api(settings: Settings) -> AsyncIterator[ApiClient]:
    from yggdrasil.tenant.api.app import create_app

    app = create_app(settings)
    tokens = create_role_tokens(settings.tenant_dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tenant.test") as http:
            yield ApiClient(http, tokens, settings.tenant_dsn)


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signing key for tenant "acme", so orders for partner tenants can be written."""
    from yggdrasil.events.signing import generate_keypair
    from yggdrasil.federation.keys import write_signing_key

    path = tmp_path_factory.mktemp("keys") / "acme.key"
    write_signing_key(path, generate_keypair()[0])
    return path


@pytest.fixture
async def api(tenant_dsn: str, signing_key_file: Path) -> AsyncIterator[ApiClient]:
    async with open_api(make_settings(tenant_dsn, signing_key_path=signing_key_file)) as client:
        yield client


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


YGG = str(Path(sys.executable).parent / "ygg")


@dataclass
class ServerProcess:
    """A real server process (`ygg tenant serve`, `ygg mesh serve`, `ygg portal serve`) on
    127.0.0.1:port, its output appended to `log_path`; `start` again runs it on the same port."""

    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    what: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until /health answers 200; fail with the end of the log if the process exits or
        the time is up."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.what} did not come up:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def terminate(self) -> None:
        """SIGTERM and wait until the process is gone (its port is closed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def running(*servers: ServerProcess) -> Iterator[None]:
    """Start the servers side by side (the start-up cost is paid once), stop them at the end."""
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
        yield
    finally:
        for server in servers:
            server.terminate()


@dataclass
class TenantProcess:
    """A real `ygg tenant serve` process on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    url: str
    admin_token: str
    log_path: Path


@contextmanager
def tenant_server_process(dsn: str, log_dir: Path, **env_overrides: str) -> Iterator[TenantProcess]:
    from yggdrasil.devstack.ports import free_port
    from yggdrasil.tenant.auth import create_token

    port = free_port()
    with psycopg.connect(dsn) as conn:
        token = create_token(conn, "admin-user", "admin", tenant_id=env_overrides.get("YGG_TENANT_ID", "acme"))
    env = {**os.environ, "YGG_TENANT_DSN": dsn, "YGG_PORT": str(port), "YGG_TENANT_ID": "acme",
           "YGG_LOG_JSON": "true", **env_overrides}
    server = ServerProcess([YGG, "tenant", "serve"], env, port, log_dir / f"tenant-{port}.log", "tenant server")
    with running(server):
        assert server.process is not None
        yield TenantProcess(server.process, server.url, token, server.log_path)
