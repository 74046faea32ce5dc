"""`ygg sidecar run`: the publisher and the relay of one tenant, over one broker connection.

The composition root of the sidecar process. The database pool and the LISTEN connection live
for the whole run; broker connections come and go. The sidecar connects, runs the publisher
and the relay until the connection drops (or either loop fails), then reconnects with backoff
from 1 s to 30 s. nats-py's own reconnection is off: its fixed wait has no jitter or cap, and a
fresh connection per session also recreates the pull subscriptions from their durable
consumers, which remember the ack floor. While the broker is away the outbox fills, nothing is
lost, and the database keeps serving the tenant.

SIGTERM or SIGINT (or `stop`, for callers in-process) ends the run gracefully: both loops
finish their current batch (the relay commits and acks it), then everything is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool

from yggdrasil.background import cancel_and_wait
from yggdrasil.broker.permissions import inbox_prefix
from yggdrasil.broker.streams import declared_streams_for, ensure_streams
from yggdrasil.federation.backoff import Backoff
from yggdrasil.federation.keys import load_signing_key
from yggdrasil.federation.publisher import Publisher, count_pending, listen_for_outbox
from yggdrasil.federation.receipts import ReceiptBundler
from yggdrasil.federation.registry_sync import RegistrySync
from yggdrasil.federation.relay import Relay, RelayContext
from yggdrasil.federation.status import SidecarStatus
from yggdrasil.settings import Settings
from yggdrasil.tenant.adapters.outbox import prune_answered_events

log = logging.getLogger(__name__)

# How long the loops get to finish their batch on a graceful stop.
STOP_GRACE_SECONDS = 10.0


@dataclass
class Sidecar:
    """The wired parts, as `bootstrap` returns them (tests drive them directly)."""

    settings: Settings
    pool: AsyncConnectionPool
    publisher: Publisher
    relay: Relay
    status: SidecarStatus


def bootstrap(settings: Settings, *, signing_key: Ed25519PrivateKey | None = None,
              status: SidecarStatus | None = None) -> Sidecar:
    """Build, without connecting, the sidecar's parts. Raises SigningKeyError if no key is
    given and none can be read from `settings.signing_key_path`."""
    status = status or SidecarStatus()
    key = signing_key or load_signing_key(settings.signing_key_path)
    pool = AsyncConnectionPool(settings.tenant_dsn, open=False, min_size=1, max_size=4, timeout=5.0,
                               check=AsyncConnectionPool.check_connection, name=f"sidecar-{settings.tenant_id}")
    publisher = Publisher(
        pool, status=status.publisher, batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
        backoff=Backoff(settings.publisher_backoff_initial_seconds, settings.publisher_backoff_max_seconds),
        receipt_timeout=settings.receipt_timeout_seconds,
        resend_cap=settings.receipt_resend_max_interval_seconds,
        # Receipts arrive on the b2b stream: none is overdue while it still has a backlog for us.
        receipts_caught_up=lambda: "b2b" in status.relay.caught_up,
        bundler=ReceiptBundler(settings.tenant_id, key, settings.max_event_bytes),
    )
    relay = Relay(
        pool, RelayContext(settings.tenant_id, key, settings.max_event_bytes), status=status.relay,
        batch_size=settings.relay_batch_size, fetch_timeout=settings.relay_fetch_timeout_seconds,
        resync_after=settings.resync_after_seconds,
    )
    return Sidecar(settings, pool, publisher, relay, status)


async def run_sidecar(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    status: SidecarStatus | None = None,
    signing_key: Ed25519PrivateKey | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, or until `stop` is set when one is given (then no signal
    handlers are installed)."""
    sidecar = bootstrap(settings, signing_key=signing_key, status=status)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
    background = [asyncio.create_task(listen_for_outbox(settings.tenant_dsn, sidecar.publisher.wake))]
    try:
        async with sidecar.pool:
            if settings.outbox_retention_days is not None:
                background.append(asyncio.create_task(_prune_outbox_forever(sidecar, stop)))
            if settings.mesh_url:
                # Independent of the broker: the partner copy stays current while it is away.
                sync = RegistrySync.from_settings(settings, sidecar.pool, sidecar.status.registry)
                background.append(asyncio.create_task(sync.run(stop), name="registry-sync"))
            else:
                sidecar.status.registry.move("off")
            await _supervise(sidecar, stop)
    finally:
        await cancel_and_wait(background)
        for sig in installed:
            loop.remove_signal_handler(sig)
        sidecar.status.broker.move("stopped")


async def _supervise(sidecar: Sidecar, stop: asyncio.Event) -> None:
    settings, status = sidecar.settings, sidecar.status
    backoff = Backoff(settings.broker_reconnect_initial_seconds, settings.broker_reconnect_max_seconds)
    while not stop.is_set():
        status.broker.move("connecting")
        lost = asyncio.Event()
        try:
            nc = await _connect(settings, lost)
        except Exception as exc:  # refused, timed out, bad credentials: all mean "not now"
            status.broker.move("unreachable", f"{type(exc).__name__}: {exc}")
            status.publisher.move("broker_unreachable")
            await _refresh_pending(sidecar)
            await _sleep_unless(stop, backoff.next_delay())
            continue
        backoff.reset()
        status.broker.move("connected")
        try:
            await _session(sidecar, nc, stop, lost)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
        if not stop.is_set():
            status.broker.move("unreachable", status.broker.last_error)
            await _sleep_unless(stop, backoff.next_delay())


async def _connect(settings: Settings, lost: asyncio.Event) -> NatsClient:
    async def on_closed() -> None:
        lost.set()

    async def on_error(exc: Exception) -> None:
        log.debug("broker connection error: %s", exc)

    credentials = {"user": settings.broker_user, "password": settings.broker_password} if settings.broker_user else {}
    return await nats.connect(
        servers=[url.strip() for url in settings.broker_url.split(",")],
        name=f"ygg-sidecar-{settings.tenant_id}",
        inbox_prefix=inbox_prefix(settings.tenant_id),
        # Our own loop retries with backoff. nats-py tries each server until it has failed more
        # than `max_reconnect_attempts` times (0 would mean forever, inside connect()), waiting
        # `reconnect_time_wait` between tries: so each call tries each server twice, at once.
        allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=1, reconnect_time_wait=0,
        closed_cb=on_closed, disconnected_cb=on_closed, error_cb=on_error,
        **credentials,
    )


async def _session(sidecar: Sidecar, nc: NatsClient, stop: asyncio.Event, lost: asyncio.Event) -> None:
    """One broker connection's lifetime: both loops, until the connection is lost, a loop
    fails, or `stop`."""
    js = nc.jetstream()
    status = sidecar.status
    try:
        if sidecar.settings.broker_ensure_streams:
            await ensure_streams(js, declared_streams_for(sidecar.settings))
    except Exception as exc:
        status.broker.move("unreachable", f"cannot declare streams: {type(exc).__name__}: {exc}")
        return
    loops = [asyncio.create_task(sidecar.publisher.run(js, stop), name="publisher"),
             asyncio.create_task(sidecar.relay.run(js, stop), name="relay")]
    watchers = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
    try:
        await asyncio.wait([*loops, *watchers], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set() and not lost.is_set():
            # Graceful: let the loops finish their batch (they check `stop` between batches).
            await asyncio.wait(loops, timeout=STOP_GRACE_SECONDS)
    finally:
        for task in [*loops, *watchers]:
            task.cancel()
        results = await asyncio.gather(*loops, return_exceptions=True)
        await asyncio.gather(*watchers, return_exceptions=True)
    for task, result in zip(loops, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            message = _describe(result)
            log.warning("%s stopped: %s", task.get_name(), message)
            status.broker.last_error = message
    if lost.is_set():
        status.publisher.move("broker_unreachable")
        status.relay.move("broker_unreachable")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


async def _refresh_pending(sidecar: Sidecar) -> None:
    """Keep the pending count current while the broker is away (best effort)."""
    with contextlib.suppress(Exception):
        async with sidecar.pool.connection(timeout=1.0) as conn:
            sidecar.status.publisher.pending = await count_pending(conn)


PRUNE_INTERVAL_SECONDS = 3600.0


async def _prune_outbox_forever(sidecar: Sidecar, stop: asyncio.Event) -> None:
    """Apply the outbox retention once an hour (the first time at start)."""
    days = sidecar.settings.outbox_retention_days
    while not stop.is_set():
        try:
            async with sidecar.pool.connection() as conn:
                removed = await prune_answered_events(conn, days)
            if removed:
                log.info("outbox retention: deleted answered events", extra={"removed": removed, "older_than_days": days})
        except Exception as exc:  # the database may be down; retention can wait an hour
            log.warning("outbox retention could not run", extra={"error": str(exc)})
        await _sleep_unless(stop, PRUNE_INTERVAL_SECONDS)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
