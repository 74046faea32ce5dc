"""Helpers for the mesh tests: an in-process mesh app, real `ygg mesh serve` and `ygg tenant
serve` processes on chosen ports (so they can be restarted on the same one), a server that
accepts connections and never answers, and registry fixtures."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import psycopg

from yggdrasil.events.signing import encode_public_key, generate_keypair
from yggdrasil.settings import Settings

# The real-process helpers are shared with the tenant and portal tests; mesh tests import them from here.
from conftest import YGG, ServerProcess, running  # noqa: F401


def public_key() -> str:
    return encode_public_key(generate_keypair()[1])


def admin_token(central_dsn: str, name: str = "test-admin") -> str:
    from yggdrasil.mesh.adapters.admin_tokens import create_admin_token

    with psycopg.connect(central_dsn) as conn:
        return create_admin_token(conn, name)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mesh_settings(central_dsn: str, **overrides: object) -> Settings:
    return Settings(central_dsn=central_dsn, log_json=False, **overrides)


@asynccontextmanager
async def open_mesh(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The mesh app in-process (lifespan included), for behaviour that needs no real process."""
    from yggdrasil.mesh.api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://mesh.test") as http:
            yield http


def tenant_server(dsn: str, tenant_id: str, port: int, log_dir: Path) -> ServerProcess:
    env = {**os.environ, "YGG_TENANT_DSN": dsn, "YGG_PORT": str(port), "YGG_TENANT_ID": tenant_id,
           "YGG_LOG_JSON": "true"}
    return ServerProcess([YGG, "tenant", "serve"], env, port, log_dir / f"tenant-{tenant_id}-{port}.log",
                         f"tenant server {tenant_id}")


def mesh_server(central_dsn: str, port: int, log_dir: Path, **env_overrides: str) -> ServerProcess:
    env = {**os.environ, "YGG_CENTRAL_DSN": central_dsn, "YGG_MESH_PORT": str(port), "YGG_LOG_JSON": "true",
           **env_overrides}
    return ServerProcess([YGG, "mesh", "serve"], env, port, log_dir / f"mesh-{port}.log", "mesh server")


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a hung tenant."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def tenant_token(dsn: str, tenant_id: str, role: str = "admin") -> str:
    from yggdrasil.tenant.auth import create_token

    with psycopg.connect(dsn) as conn:
        return create_token(conn, f"{role}-user", role, tenant_id=tenant_id)


async def register(central_dsn: str, tenant_id: str, api_url: str, key: str | None = None) -> None:
    from yggdrasil.mesh.adapters.registry import register_tenant

    async with await psycopg.AsyncConnection.connect(central_dsn) as conn:
        await register_tenant(conn, tenant_id=tenant_id, name=f"{tenant_id.upper()} Ltd", api_url=api_url,
                              public_key=key or public_key())


async def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.05) -> object:
    """Poll an async or sync `check` until it returns something truthy; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)
