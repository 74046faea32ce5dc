"""Helpers for the federation tests (the lifecycle tests use them too): two trading tenants, a
broker, what the seller's order service will write to its outbox, a sidecar run in-process, and
polling. Fixtures are in conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from conftest import database_from_template
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from yggdrasil.broker.streams import consumer_spec, ensure_consumers, ensure_streams
from yggdrasil.broker.subjects import MODULES
from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.events.catalogue import payload_state_hash
from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import encode_public_key, generate_keypair
from yggdrasil.federation.keys import write_signing_key
from yggdrasil.federation.partners import add_partner, map_partner_item
from yggdrasil.federation.relay import Disposition, InboundMessage, RelayContext, apply_inbound_batch
from yggdrasil.federation.sidecar import run_sidecar
from yggdrasil.federation.status import SidecarStatus
from yggdrasil.settings import Settings
from yggdrasil.tenant import services
from yggdrasil.tenant.adapters.outbox import enqueue_event
from yggdrasil.tenant.domain.commands import CreatePurchaseOrder, NewLine, UpdateOrder
from yggdrasil.tenant.outbound import OutboundEvents

SELLER, BUYER = "acme-seller", "bravo-buyer"
SELLER_SKU, BUYER_SKU = "RETRO-CLOCK", "BRAVO-CLOCK"


@dataclass
class Tenant:
    id: str
    dsn: str
    key: Ed25519PrivateKey
    broker_url: str = ""
    extra_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def public_key(self) -> str:
        return encode_public_key(self.key.public_key())

    def settings(self) -> Settings:
        return Settings(**{
            "tenant_id": self.id, "tenant_dsn": self.dsn, "broker_url": self.broker_url,
            "broker_ensure_streams": True, "log_json": False, "outbox_poll_seconds": 0.5,
            "relay_fetch_timeout_seconds": 0.2, "publisher_backoff_initial_seconds": 0.1,
            "publisher_backoff_max_seconds": 0.5, "broker_reconnect_initial_seconds": 0.1,
            "broker_reconnect_max_seconds": 0.5, **self.extra_settings,
        })

    def fetch(self, query: str, params: Any = None) -> list[tuple]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(query, params).fetchall()

    def scalar(self, query: str, params: Any = None) -> Any:
        rows = self.fetch(query, params)
        return rows[0][0] if rows else None


@contextlib.asynccontextmanager
async def trading_pair(pg_admin_dsn: str, template: str) -> AsyncIterator[tuple[Tenant, Tenant]]:
    """ACME-SELLER and BRAVO-BUYER on fresh databases, each the other's partner. The buyer
    applies the seller's orders without approval, has a warehouse and an item, and maps the
    seller's SKU to it."""
    with database_from_template(pg_admin_dsn, template) as seller_dsn, \
            database_from_template(pg_admin_dsn, template) as buyer_dsn:
        seller = Tenant(SELLER, seller_dsn, generate_keypair()[0])
        buyer = Tenant(BUYER, buyer_dsn, generate_keypair()[0])
        async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
            await add_partner(conn, tenant_id=BUYER, public_key=buyer.public_key, name="Bravo Buyer")
        async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
            await add_partner(conn, tenant_id=SELLER, public_key=seller.public_key, name="ACME Seller",
                              approval_policy="auto")
            await conn.execute("INSERT INTO warehouses (code, name) VALUES ('MAIN', 'Bravo main warehouse')")
            await conn.execute("INSERT INTO items (sku, name) VALUES (%s, 'Retro clock, as Bravo calls it')",
                               (BUYER_SKU,))
            await map_partner_item(conn, tenant_id=SELLER, partner_sku=SELLER_SKU, item_sku=BUYER_SKU)
        yield seller, buyer


@contextlib.asynccontextmanager
async def broker_with_streams(store_dir: Path) -> AsyncIterator[EmbeddedNats]:
    """A running nats-server without authentication, with the declared streams."""
    server = EmbeddedNats(store_dir)
    server.start()
    try:
        async with broker_admin(server.url) as nc:
            await ensure_streams(nc.jetstream())
        yield server
    finally:
        server.stop()


def order_payload(order_id: str, state: str = "draft", quantity: str = "3", sku: str = SELLER_SKU,
                  counterpart_order_id: str | None = None) -> dict[str, Any]:
    payload = {"order_id": order_id, "currency": "EUR", "state": state,
               "lines": [{"line_no": 1, "sku": sku, "description": "Retro clock", "quantity": quantity,
                          "unit_price": "19.90"}]}
    if counterpart_order_id is not None:
        payload["counterpart_order_id"] = counterpart_order_id
    return payload


async def sell(seller: Tenant, order_id: str, verb: str = "created", state: str = "draft",
               destination: str = BUYER, state_hash: str | None = None, **payload_args: Any) -> Envelope:
    """What the seller's order service does: an outbox row, committed. `state_hash` replaces
    the one the seller would compute (a payload and hash that disagree, validly signed)."""
    payload = order_payload(order_id, state, **payload_args)
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        envelope = await enqueue_event(
            conn, signing_key=seller.key, source=seller.id, destination=destination,
            type=f"sales.order.{verb}", aggregate_id=order_id, payload=payload,
            state_hash=state_hash or payload_state_hash(payload),
        )
        await conn.commit()
    return envelope


async def order_lifecycle(seller: Tenant, order_id: str) -> list[Envelope]:
    """created, confirmed, shipped: three outbox rows with sequence 1, 2, 3."""
    return [await sell(seller, order_id, "created", "draft"),
            await sell(seller, order_id, "confirmed", "confirmed"),
            await sell(seller, order_id, "shipped", "shipped")]


# -- buyer to seller: the tenants' own order services ---------------------------------------------


async def prepare_trade_both_ways(seller: Tenant, buyer: Tenant, *, seller_policy: str = "auto") -> int:
    """Make the seller a supplier the buyer can order from: the buyer's supplier linked to the
    seller; at the seller, a warehouse with stock of RETRO-CLOCK, the buyer's SKU BRAVO-CLOCK
    mapped to it, and the buyer's documents applied without approval unless `seller_policy`
    says so. Returns the buyer's supplier id."""
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        await conn.execute("UPDATE b2b_partners SET approval_policy = %s WHERE tenant_id = %s", (seller_policy, BUYER))
        warehouse = await (await conn.execute(
            "INSERT INTO warehouses (code, name) VALUES ('ACME-MAIN', 'ACME main warehouse') RETURNING id")).fetchone()
        item = await (await conn.execute(
            "INSERT INTO items (sku, name, list_price) VALUES (%s, 'Retro clock', 24.90) RETURNING id",
            (SELLER_SKU,))).fetchone()
        await conn.execute("INSERT INTO stock_levels (item_id, warehouse_id, quantity) VALUES (%s, %s, 100)",
                           (item[0], warehouse[0]))
        await map_partner_item(conn, tenant_id=BUYER, partner_sku=BUYER_SKU, item_sku=SELLER_SKU)
        await conn.commit()
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        supplier = await (await conn.execute(
            "INSERT INTO suppliers (code, name, partner_tenant_id) VALUES ('ACME', 'ACME-SELLER', %s) RETURNING id",
            (SELLER,))).fetchone()
        await conn.commit()
    return supplier[0]


def outbound(tenant: Tenant) -> OutboundEvents:
    return OutboundEvents(tenant.id, tenant.key)


async def buy(buyer: Tenant, supplier_id: int, quantity: str = "3", unit_price: str = "19.90") -> int:
    """The buyer raises a purchase order with its partner supplier, as its API would; returns
    its id. The outbox row `purchasing.order.created` is written with it."""
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        item_id = await (await conn.execute("SELECT id FROM items WHERE sku = %s", (BUYER_SKU,))).fetchone()
        warehouse_id = await (await conn.execute("SELECT id FROM warehouses ORDER BY id LIMIT 1")).fetchone()
        order = await services.create_purchase_order(conn, CreatePurchaseOrder(
            supplier_id=supplier_id, warehouse_id=warehouse_id[0],
            lines=[NewLine(item_id[0], Decimal(quantity), Decimal(unit_price))]), outbound=outbound(buyer))
    assert order.id is not None
    return order.id


async def change_purchase_order(buyer: Tenant, order_id: int, quantity: str) -> None:
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        item_id = await (await conn.execute("SELECT id FROM items WHERE sku = %s", (BUYER_SKU,))).fetchone()
        await services.update_purchase_order(conn, UpdateOrder(
            order_id=order_id, version=None,  # type: ignore[arg-type]
            lines=[NewLine(item_id[0], Decimal(quantity), Decimal("19.90"))]), outbound=outbound(buyer))


async def act(tenant: Tenant, use_case: Callable[..., Awaitable[Any]], order_id: int) -> Any:
    """One of the tenant's order use cases (confirm, ship, receive, cancel), with its outbound
    events, committed."""
    async with await psycopg.AsyncConnection.connect(tenant.dsn) as conn:
        return await use_case(conn, order_id, outbound=outbound(tenant))


async def carry(source: Tenant, destination: Tenant, event_types: str = "%") -> list[Disposition]:
    """What the two sidecars and the broker do, without them: the source's pending outbox rows
    for the destination whose type is LIKE `event_types`, in outbox order, delivered as one
    relay batch, then marked published at the source."""
    rows = source.fetch(
        "SELECT id, subject, envelope FROM b2b_events WHERE status = 'pending' AND dest_tenant = %s "
        "AND event_type LIKE %s ORDER BY id", (destination.id, event_types))
    if not rows:
        return []
    dispositions = await deliver(destination, *(InboundMessage(subject, bytes(raw)) for _, subject, raw in rows))
    source.fetch("UPDATE b2b_events SET status = 'published', published_at = now() WHERE id = ANY(%s) RETURNING 1",
                 ([row[0] for row in rows],))
    return dispositions


def sales_orders(seller: Tenant) -> list[tuple]:
    """The seller's sales orders from the buyer, with their lines."""
    return seller.fetch(
        """
        SELECT o.b2b_source_order_id, o.state, o.b2b_source_state, o.currency, c.partner_tenant_id,
               l.line_no, i.sku, l.b2b_source_sku, l.quantity, l.unit_price
          FROM crm_sales_orders o
          JOIN customers c ON c.id = o.customer_id
          JOIN crm_sales_order_lines l ON l.order_id = o.id
          JOIN items i ON i.id = l.item_id
         WHERE o.b2b_source_tenant = %s
         ORDER BY o.id, l.line_no
        """,
        (BUYER,),
    )


def divergences(tenant: Tenant) -> list[tuple]:
    """(event type, our order table, expected hash, actual hash, detail) of every divergence."""
    return tenant.fetch("SELECT event_type, order_table, expected_hash, actual_hash, detail FROM b2b_divergences "
                        "ORDER BY id")


@contextlib.asynccontextmanager
async def running_sidecar(tenant: Tenant) -> AsyncIterator[SidecarStatus]:
    stop, status = asyncio.Event(), SidecarStatus()
    task = asyncio.create_task(run_sidecar(tenant.settings(), stop=stop, status=status, signing_key=tenant.key))
    try:
        yield status
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def eventually(check: Callable[[], Any | Awaitable[Any]], timeout: float = 15.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.1)


def purchase_orders(buyer: Tenant) -> list[tuple]:
    return buyer.fetch(
        """
        SELECT o.b2b_source_order_id, o.state, o.b2b_source_state, o.currency, s.partner_tenant_id,
               l.line_no, l.quantity, i.sku
          FROM purchasing_orders o
          JOIN suppliers s ON s.id = o.supplier_id
          JOIN purchasing_order_lines l ON l.order_id = o.id
          JOIN items i ON i.id = l.item_id
         WHERE o.b2b_source_tenant = %s
         ORDER BY o.b2b_source_order_id, l.line_no
        """,
        (SELLER,),
    )



def source_states(buyer: Tenant) -> dict[str, str]:
    """{the seller's order id: the seller's state as the buyer recorded it}, per purchase order."""
    return {row[0]: row[2] for row in purchase_orders(buyer)}

def outbox_message(tenant: Tenant, envelope: Envelope) -> InboundMessage:
    """The outbox row of `envelope`, as the broker would deliver it."""
    subject, raw = tenant.fetch("SELECT subject, envelope FROM b2b_events WHERE event_id = %s",
                                (envelope.event_id,))[0]
    return InboundMessage(subject, bytes(raw))


async def deliver(tenant: Tenant, *messages: InboundMessage) -> list[Disposition]:
    """Apply messages as one relay batch, without a broker, and commit."""
    async with await psycopg.AsyncConnection.connect(tenant.dsn) as conn:
        async with conn.transaction():
            return await apply_inbound_batch(conn, list(messages), RelayContext(tenant.id, tenant.key))


def outbox_statuses(seller: Tenant) -> list[tuple[str, str | None]]:
    """(status, receipt outcome) of the seller's order events, in outbox order."""
    return seller.fetch(
        "SELECT status, receipt_outcome FROM b2b_events WHERE event_type LIKE 'sales.%%' ORDER BY id"
    )


@contextlib.asynccontextmanager
async def broker_admin(url: str, **credentials: str) -> AsyncIterator[NatsClient]:
    """A connection with the broker operator's rights (no credentials: an open broker)."""
    nc = await nats.connect(url, **credentials)
    try:
        yield nc
    finally:
        await nc.close()


async def publish_raw(url: str, subject: str, data: bytes, msg_id: str, **credentials: str) -> bool:
    """Publish as a misbehaving or retrying producer would; returns whether the broker stored
    it as new."""
    async with broker_admin(url, **credentials) as nc:
        ack = await nc.jetstream().publish(subject, data, headers={"Nats-Msg-Id": msg_id})
        return not ack.duplicate


async def consumer_drained(url: str, tenant: str, module: str = "sales", **credentials: str) -> bool:
    """Every message the tenant's consumer was given has been acked or terminated."""
    spec = consumer_spec(tenant, module)
    async with broker_admin(url, **credentials) as nc:
        try:
            info = await nc.jetstream().consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            return False  # the sidecar has not created it yet
        return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0


async def create_consumers(url: str, tenant: str, *, ack_wait: float) -> None:
    """Declare `tenant`'s durable consumers before its sidecar does, with a short `ack_wait`,
    so that a message delivered to a sidecar that died is redelivered in seconds, not after
    the declared 30 s (the sidecar binds to an existing consumer as it is)."""
    async with broker_admin(url) as nc:
        await ensure_consumers(nc.jetstream(), [consumer_spec(tenant, m, ack_wait=ack_wait) for m in MODULES])


@dataclass
class SidecarProcess:
    """A real `ygg sidecar run`, configured through the environment as an operator would."""

    tenant: Tenant
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    log_offset: int = 0  # where the current run's log begins

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"sidecar-{self.tenant.id}.log"

    def has_logged(self, text: str) -> bool:
        """Whether the current run has logged `text` (a run is ready once it logged
        '"broker: connected"'; a signal before its handlers are installed kills it outright)."""
        if not self.log_path.exists():
            return False
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return text.encode() in log.read()

    def start(self) -> None:
        key_path = self.log_dir / f"{self.tenant.id}.key"
        if not key_path.exists():
            write_signing_key(key_path, self.tenant.key)
        env = {**os.environ, "YGG_TENANT_ID": self.tenant.id, "YGG_TENANT_DSN": self.tenant.dsn,
               "YGG_BROKER_URL": self.tenant.broker_url, "YGG_SIGNING_KEY_PATH": str(key_path),
               "YGG_LOG_JSON": "true", "YGG_OUTBOX_POLL_SECONDS": "0.5",
               "YGG_BROKER_RECONNECT_INITIAL_SECONDS": "0.1", "YGG_BROKER_RECONNECT_MAX_SECONDS": "0.5",
               **self.env}
        with open(self.log_path, "ab") as log:
            self.log_offset = log.tell()
            self.process = subprocess.Popen([str(Path(sys.executable).parent / "ygg"), "sidecar", "run"],
                                            env=env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no batch is finished, nothing closed."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if not self.process:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
