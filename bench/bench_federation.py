"""Federation end to end (seller order commit -> buyer purchase order commit), next to the raw
ceilings of its two halves, in one run.

    .venv/bin/python bench/bench_federation.py [--seconds N] [--events N]

Starts its own embedded PostgreSQL (temporary directory, `track_commit_timestamp` on so that
latencies are commit to commit) with two migrated tenant databases: seller `acme` and buyer
`bravo`, each registered as the other's partner with approval `auto`, the seller's customer
linked to `bravo`, the seller's three SKUs mapped to the buyer's items. Starts an embedded
nats-server (JetStream, `sync_interval: always`, as the project configures it) and one real
`ygg sidecar run` process per tenant, with default settings. Then measures:

  (a) maximum: N sales orders (3 lines each) are created on the seller through the tenant's own
      use case (`tenant.services.create_sales_order` with `OutboundEvents`: order, lines, audit
      rows and the signed outbox row in one transaction) while no sidecar runs; then the
      sidecars start, and the rate is taken from the first to the last buyer purchase-order
      commit. Latency here is mostly time spent waiting in the backlog.
  (b) fixed offered rates, 200/s and 1,000/s for N seconds each, with the sidecars running: a
      paced producer (open loop, 8 connections) writes what that use case writes for the
      partner, `enqueue_event` with the same signed 3-line order payload (`--producer service`
      runs the whole `create_sales_order` instead: with the sidecars on the same 2 cores it fell
      short of 200/s, its audit rows serialising the seller's commits on the audit chain head,
      held through the commit's fsync); achieved producer
      rate, delivered rate, and commit-to-commit latency p50/p99/max.
  (c) ceilings, same broker, same database server, same durability:
      - raw JetStream: the same envelope bytes published to a scratch stream with the same
        settings (file storage, `Nats-Msg-Id`, pipelined in windows of one batch like the publisher)
        while a pull consumer in another process fetches a batch at a time and acks each;
      - raw PostgreSQL apply on the buyer's database: per event, a purchase order with 3 lines
        and an inbox row (one statement), in a savepoint, a batch per transaction, audit triggers
        firing; once with each statement awaited, once pipelined (one round trip per batch); and
        set-based, the same rows for a batch of events in one statement (as the relay's fast pass
        writes). The fastest of the three is the PostgreSQL ceiling.
  For reference only (not the same durability): raw JetStream on a second nats-server with
  JetStream's default sync. And, to see where the time goes (sidecars stopped): the relay's own
  `apply_inbound_batch` run in-process on fresh seller events (every check, the effect, the
  receipt; no broker), profiled by package; the seller applying the receipts that produced;
  the statements each issues per event (counted from PostgreSQL's statement log for one batch
  of one batch); the CPU each process used during (a); one awaited `SELECT 1`; the seller's write
  path with 1 and 4 connections.

Latency = commit time of the buyer's purchase order minus commit time of the seller's
transaction (`pg_xact_commit_timestamp`; one server, one clock), split into stages: to the
publisher's claim (`published_at`), to the buyer's relay transaction (the inbox's `applied_at`),
and that transaction up to its commit. No assertions: figures go to
bench/RESULTS.md by hand. Everything shares the machine, as on a small on-premises box.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import itertools
import multiprocessing
import os
import platform
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import nats
import nats.errors
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from yggdrasil import db
from yggdrasil.broker.streams import ensure_streams, stream_config
from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.devstack.postgres import EmbeddedPostgres
from yggdrasil.events.catalogue import payload_state_hash
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES
from yggdrasil.events.signing import encode_public_key, generate_keypair
from yggdrasil.federation.batch import applied_receipts
from yggdrasil.federation.keys import write_signing_key
from yggdrasil.federation.partners import add_partner, load_partners, map_partner_item
from yggdrasil.federation.receipts import QueuedReceipt, ReceiptBundler
from yggdrasil.federation.relay import InboundMessage, RelayContext, apply_inbound_batch, verify_message
from yggdrasil.settings import Settings
from yggdrasil.tenant.adapters.outbox import enqueue_event
from yggdrasil.tenant.domain.commands import CreateSalesOrder, NewLine
from yggdrasil.tenant.outbound import OutboundEvents
from yggdrasil.tenant.services import create_sales_order

SELLER, BUYER = "acme", "bravo"
ACTOR = "bench-producer"
PRICES = ("12.5000", "7.2500", "99.9900")
# The sidecar's default outbox and relay batch sizes: the ceilings publish, fetch and write
# in batches of the same size.
BATCH = Settings.model_fields["relay_batch_size"].default
assert BATCH == Settings.model_fields["outbox_batch_size"].default
RAW_STREAM, RAW_SUBJECT, RAW_DURABLE = "BENCH_RAW", "bench.raw.sales.bravo.acme", "bench-raw"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- statistics ----------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@dataclass
class Flow:
    """One measured batch of orders, seller commit -> buyer commit."""

    label: str
    orders: int
    applied: int = 0
    producer_rate: float = float("nan")      # seller commits/s, first to last
    delivered_rate: float = float("nan")     # buyer commits/s, first to last
    latencies_ms: list[float] = field(default_factory=list)      # commit to commit
    start_latencies_ms: list[float] = field(default_factory=list)  # PO created_at - b2b_events.created_at
    # Where the commit-to-commit time goes, per order: seller commit -> the publisher's claim
    # (`published_at`, its transaction's start), -> the buyer's relay transaction start (the
    # inbox row's `applied_at`), -> the buyer's commit.
    stages_ms: dict[str, list[float]] = field(default_factory=lambda: {"claim": [], "relay": [], "apply": []})
    note: str = ""

    def p(self, q: float, start: bool = False) -> float:
        return percentile(self.start_latencies_ms if start else self.latencies_ms, q)


# -- setup ------------------------------------------------------------------------------------------

@dataclass
class Tenant:
    id: str
    dsn: str
    key: Ed25519PrivateKey
    key_path: Path


@dataclass
class Fixture:
    seller: Tenant
    buyer: Tenant
    customer_id: int
    warehouse_id: int
    item_ids: list[int]
    broker_url: str
    postmaster_pid: int
    log_path: Path
    tmp: Path
    nats_pid: int
    sidecar_env: dict[str, str] = field(default_factory=dict)  # --sidecar-setting, as YGG_ variables


async def seed(seller: Tenant, buyer: Tenant) -> tuple[int, int, list[int]]:
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        await add_partner(conn, tenant_id=BUYER, public_key=encode_public_key(buyer.key.public_key()),
                          name="Bravo", approval_policy="auto")
        customer_id = (await (await conn.execute(
            "INSERT INTO customers (code, name, partner_tenant_id, currency) "
            "VALUES ('BRAVO', 'Bravo (a Yggdrasil tenant)', %s, 'EUR') RETURNING id", (BUYER,))).fetchone())[0]
        warehouse_id = (await (await conn.execute(
            "INSERT INTO warehouses (code, name) VALUES ('MAIN', 'Acme main') RETURNING id")).fetchone())[0]
        item_ids = []
        for n, price in enumerate(PRICES, start=1):
            row = await (await conn.execute(
                "INSERT INTO items (sku, name, list_price, cost) VALUES (%s, %s, %s, 1) RETURNING id",
                (f"ACME-{n}", f"Acme item {n}", price))).fetchone()
            item_ids.append(row[0])
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        await add_partner(conn, tenant_id=SELLER, public_key=encode_public_key(seller.key.public_key()),
                          name="Acme", approval_policy="auto")
        await conn.execute("INSERT INTO warehouses (code, name) VALUES ('MAIN', 'Bravo main')")
        for n in range(1, len(PRICES) + 1):
            await conn.execute("INSERT INTO items (sku, name) VALUES (%s, %s)", (f"BRAVO-{n}", f"Bravo item {n}"))
            await map_partner_item(conn, tenant_id=SELLER, partner_sku=f"ACME-{n}", item_sku=f"BRAVO-{n}")
    return customer_id, warehouse_id, item_ids


# -- the seller's producer ----------------------------------------------------------------------------

class Producer:
    """Writes the seller's side: an order change and its signed outbox row, one transaction.

    `service` path: the tenant's own use case, as `POST /api/v1/sales-orders` runs it inside the
    server (actor set; order, 3 lines, audit rows, the outbox row). `outbox` path: only what
    that use case writes for the partner, `enqueue_event` with the same 3-line order payload
    (no order row, no audit rows, so no audit-chain lock). Each transaction also reads its
    transaction id, for its commit timestamp. Returns (order key, xid) pairs."""

    def __init__(self, f: Fixture):
        self.f = f
        self.outbound = OutboundEvents(SELLER, f.seller.key, DEFAULT_MAX_BYTES)
        self.command = CreateSalesOrder(
            customer_id=f.customer_id, warehouse_id=f.warehouse_id, currency="EUR",
            lines=[NewLine(item_id=item_id, quantity=Decimal(n + 1)) for n, item_id in enumerate(f.item_ids)],
        )
        self.serial = itertools.count(1)

    async def _begin(self, conn: psycopg.AsyncConnection) -> str:
        cur = await conn.execute("SELECT set_config('ygg.actor', %s, true), pg_current_xact_id()::text", (ACTOR,))
        return (await cur.fetchone())[1]

    async def create(self, conn: psycopg.AsyncConnection, path: str) -> tuple[str, str]:
        async with conn.transaction():
            xid = await self._begin(conn)
            if path == "service":
                order = await create_sales_order(conn, self.command, outbound=self.outbound)
                key = str(order.id)
            else:
                key = f"X{next(self.serial)}"
                payload = {"order_id": key, "currency": "EUR", "state": "draft", "lines": [
                    {"line_no": n + 1, "sku": f"ACME-{n + 1}", "description": f"Acme item {n + 1}",
                     "quantity": f"{n + 1}.000", "unit_price": price} for n, price in enumerate(PRICES)]}
                await enqueue_event(conn, signing_key=self.f.seller.key, source=SELLER, destination=BUYER,
                                    type="sales.order.created", aggregate_id=key, payload=payload,
                                    state_hash=payload_state_hash(payload))
        return key, xid

    async def backlog(self, count: int, path: str = "service", connections: int = 4) -> tuple[list, float]:
        """`count` orders as fast as `connections` connections go; returns keys and seconds."""
        conns = [await psycopg.AsyncConnection.connect(self.f.seller.dsn) for _ in range(connections)]
        made: list[tuple[str, str]] = []
        remaining = itertools.count()

        async def worker(conn: psycopg.AsyncConnection) -> None:
            while next(remaining) < count:
                made.append(await self.create(conn, path))

        started = time.perf_counter()
        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            for c in conns:
                await c.close()
        return made, time.perf_counter() - started

    async def paced(self, rate: float, seconds: float, path: str, connections: int = 8) -> list:
        """Open loop: order i is due at start + i/rate; a worker that falls behind goes on at
        once (no order is skipped), so the achieved rate shows whether the producer kept up."""
        total = int(rate * seconds)
        conns = [await psycopg.AsyncConnection.connect(self.f.seller.dsn) for _ in range(connections)]
        made: list[tuple[str, str]] = []
        sequence = itertools.count()
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05

        async def worker(conn: psycopg.AsyncConnection) -> None:
            while (i := next(sequence)) < total:
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                made.append(await self.create(conn, path))

        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            for c in conns:
                await c.close()
        return made


# -- sidecar processes -------------------------------------------------------------------------------

def start_sidecar(f: Fixture, tenant: Tenant) -> tuple[subprocess.Popen, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YGG_")}
    env.update({"YGG_TENANT_ID": tenant.id, "YGG_TENANT_DSN": tenant.dsn, "YGG_BROKER_URL": f.broker_url,
                "YGG_SIGNING_KEY_PATH": str(tenant.key_path), "YGG_BROKER_ENSURE_STREAMS": "true",
                **f.sidecar_env,
                **({"YGG_LOG_LEVEL": os.environ["YGG_BENCH_SIDECAR_LOG_LEVEL"]} if "YGG_BENCH_SIDECAR_LOG_LEVEL" in os.environ else {})})
    log = open(f.tmp / f"sidecar-{tenant.id}.log", "wb")  # noqa: SIM115 - closed in stop_sidecars
    process = subprocess.Popen([sys.executable, "-m", "yggdrasil", "sidecar", "run"], env=env, cwd=f.tmp,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def stop_sidecars(sidecars: list[tuple[subprocess.Popen, object]]) -> list[int | None]:
    codes = []
    for process, _ in sidecars:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, log in sidecars:
        try:
            codes.append(process.wait(20))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
        log.close()  # type: ignore[attr-defined]
    return codes


# -- CPU accounting ---------------------------------------------------------------------------------

def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _cpu_of(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0  # utime, stime


def _reaped_cpu_of(pid: int) -> float:
    """CPU of `pid`'s children that exited and were waited for (cutime, cstime)."""
    fields = _stat(pid)
    return (int(fields[13]) + int(fields[14])) / CLK_TCK if fields else 0.0


def _children(ppid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields and int(fields[1]) == ppid:
                pids.append(int(entry.name))
    return pids


def _postgres_role(pid: int) -> str:
    """Which tenant's backend `pid` is, from its process title; anything else is the server's own
    work (autovacuum, WAL writer, checkpointer, the bench's connections to other databases)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return "postgres: other"
    for tenant in (SELLER, BUYER):
        if f" ygg_{tenant} " in title:
            return f"postgres: {tenant}'s backends"
    return "postgres: other"


def cpu_snapshot(groups: dict[str, list[int]], postmaster: int) -> dict[str, dict[int, float]]:
    snap = {name: {pid: _cpu_of(pid) for pid in pids} for name, pids in groups.items()}
    for pid in _children(postmaster):
        snap.setdefault(_postgres_role(pid), {})[pid] = _cpu_of(pid)
    # The postmaster, and its children that exited (autovacuum workers come and go).
    snap.setdefault("postgres: other", {})[postmaster] = _cpu_of(postmaster) + _reaped_cpu_of(postmaster)
    snap["bench (this process)"] = {os.getpid(): _cpu_of(os.getpid())}
    return snap


def cpu_delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    # A process that started in between counts from zero. One that exited loses its share,
    # unless it was the postmaster's child (reaped into the postmaster's count above); the
    # sidecars' pools keep their connections open.
    return {name: sum(cpu - before.get(name, {}).get(pid, 0.0) for pid, cpu in after[name].items())
            for name in after}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


# -- end-to-end measurement ---------------------------------------------------------------------------

_PUBLISHED = "SELECT count(*) FROM b2b_events WHERE status <> 'pending'"


async def _wait_until(dsn: str, query: str, params: tuple, timeout: float, interval: float) -> bool:
    """Polls `query` (one boolean) on one connection until it is true; False if `timeout` passes.

    The bench's polls run on the cores it measures, so each is kept to an index probe or two:
    counting the outbox's 10,000 rows every 0.1 s took a visible share of PostgreSQL's CPU."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute(query, params)
            if (await cur.fetchone())[0]:
                return True
            await asyncio.sleep(interval)
    return False


async def published_count(f: Fixture) -> int:
    async with await psycopg.AsyncConnection.connect(f.seller.dsn, autocommit=True) as conn:
        return (await (await conn.execute(_PUBLISHED)).fetchone())[0]


async def wait_first_published(f: Fixture, timeout: float) -> bool:
    # Rows are published in id order: the scan stops at the first row once one is.
    return await _wait_until(f.seller.dsn, "SELECT EXISTS (SELECT 1 FROM b2b_events WHERE status <> 'pending')",
                             (), timeout, 0.02)


async def wait_applied(f: Fixture, expected_total: int, timeout: float) -> bool:
    # max(id) is one probe of the primary key and never less than the count (ids are distinct
    # and positive): the orders are counted only once they could all be there.
    return await _wait_until(f.buyer.dsn, """
        SELECT coalesce(max(id), 0) >= %(n)s
               AND (SELECT count(*) FROM purchasing_orders WHERE b2b_source_tenant = %(seller)s) >= %(n)s
          FROM purchasing_orders""", {"n": expected_total, "seller": SELLER}, timeout, 0.05)


async def wait_acknowledged(f: Fixture, timeout: float) -> bool:
    """Until every seller event has its receipt (the buyer's answers have flowed back): none
    pending, none published and waiting for a receipt (both through their partial indexes)."""
    return await _wait_until(f.seller.dsn, """
        SELECT NOT EXISTS (SELECT 1 FROM b2b_events WHERE status = 'pending')
               AND NOT EXISTS (SELECT 1 FROM b2b_events WHERE status = 'published' AND receipt_due_at IS NOT NULL)
        """, (), timeout, 0.1)


async def measure_flow(f: Fixture, label: str, made: list[tuple[str, str]]) -> Flow:
    keys = [key for key, _ in made]
    with psycopg.connect(f.seller.dsn) as conn:
        committed = dict(conn.execute(
            "SELECT x, pg_xact_commit_timestamp(x::xid) FROM unnest(%s::text[]) AS x",
            ([xid for _, xid in made],)).fetchall())
        events = {row[0]: row[1:] for row in conn.execute(
            "SELECT aggregate_id, created_at, published_at, event_id FROM b2b_events "
            "WHERE event_type = 'sales.order.created' AND aggregate_id = ANY(%s)", (keys,)).fetchall()}
    seller = {key: (committed[xid], events[key][0]) for key, xid in made}
    with psycopg.connect(f.buyer.dsn) as conn:
        buyer = {row[0]: row[1:] for row in conn.execute(
            """SELECT b2b_source_order_id, pg_xact_commit_timestamp(xmin), created_at FROM purchasing_orders
                WHERE b2b_source_tenant = %s AND b2b_source_order_id = ANY(%s)""", (SELLER, keys))}
        relayed = dict(conn.execute(
            "SELECT event_id, applied_at FROM b2b_inbox WHERE source_tenant = %s AND event_id = ANY(%s)",
            (SELLER, [event_id for _, _, event_id in events.values()])).fetchall())
    flow = Flow(label, len(made), applied=len(buyer))

    def rate(times: list[datetime]) -> float:
        # Events committed after the first commit, over the span: a whole batch shares the
        # first timestamp, and counting it would favour large batches.
        times = sorted(times)
        span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0
        return sum(t > times[0] for t in times) / span if span > 0 else float("nan")

    flow.producer_rate = rate([committed for committed, _ in seller.values()])
    flow.delivered_rate = rate([committed for committed, _ in buyer.values()])
    for key, (committed, created) in buyer.items():
        seller_committed, event_created = seller[key]
        flow.latencies_ms.append((committed - seller_committed).total_seconds() * 1000)
        flow.start_latencies_ms.append((created - event_created).total_seconds() * 1000)
        _, published, event_id = events[key]
        if published is not None and relayed.get(event_id) is not None:
            marks = [seller_committed, published, relayed[event_id], committed]
            for stage, (begin, end) in zip(flow.stages_ms, itertools.pairwise(marks), strict=True):
                flow.stages_ms[stage].append((end - begin).total_seconds() * 1000)
    return flow


async def vacuum_tenants(f: Fixture) -> float:
    """VACUUM (ANALYZE) both tenant databases; the seconds it took."""
    started = time.perf_counter()
    for tenant in (f.seller, f.buyer):
        async with await psycopg.AsyncConnection.connect(tenant.dsn, autocommit=True) as conn:
            await conn.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - started


async def end_to_end(f: Fixture, events: int, seconds: float, rates: list[int], path: str) -> dict:
    producer = Producer(f)
    out: dict = {"load": [loadavg()]}
    print(f"(a) creating a backlog of {events} sales orders on {SELLER} (sidecars not running) ...", flush=True)
    backlog_ids, took = await producer.backlog(events)
    out["backlog_create_rate"] = events / took
    print(f"    {events / took:,.0f} orders/s created (order + lines + audit + signed outbox row)", flush=True)

    print("(a) starting one `ygg sidecar run` per tenant; waiting for every purchase order ...", flush=True)
    sidecars = [start_sidecar(f, f.seller), start_sidecar(f, f.buyer)]
    out["sidecars"] = sidecars
    groups = {f"sidecar {SELLER}": [sidecars[0][0].pid], f"sidecar {BUYER}": [sidecars[1][0].pid],
              "nats-server": [f.nats_pid]}
    started = time.perf_counter()
    try:
        # CPU is counted from the seller's first publish (the sidecars have started: their
        # imports and connections left out) to the last receipt back on the seller, over the
        # events not yet published at the start: everything each of them costs every process.
        await wait_first_published(f, timeout=60.0)
        before, published_before = cpu_snapshot(groups, f.postmaster_pid), await published_count(f)
        cpu_started = time.perf_counter()
        complete = await wait_applied(f, events, timeout=max(60.0, events / 20))
        applied_wall = time.perf_counter() - started
        acknowledged = await wait_acknowledged(f, timeout=60)
        out["ack_wall"] = time.perf_counter() - started
        out["a_cpu"] = cpu_delta(before, cpu_snapshot(groups, f.postmaster_pid))
        out["a_cpu_wall"] = time.perf_counter() - cpu_started
        out["a_cpu_events"] = events - published_before
        flow = await measure_flow(f, f"backlog of {events}", backlog_ids)
        flow.note = "" if complete else "TIMED OUT"
        if not acknowledged:
            flow.note += " (receipts incomplete)"
        out["a"] = flow
        out["a_wall"] = applied_wall
        out["load"].append(loadavg())
        print(f"    {flow.applied}/{events} applied, {flow.delivered_rate:,.0f}/s first to last commit; "
              f"{applied_wall:.1f} s from sidecar start", flush=True)

        # The drain leaves autovacuum tens of thousands of dead outbox versions and new rows to
        # freeze and analyze, which it starts whenever its launcher next wakes (up to a minute
        # later): often during (b), on the same two cores. (b) measures the flow at a steady
        # rate, so that work is done first, here, and the time it took reported.
        print("(b) vacuuming both tenants' databases (what the drain left for autovacuum) ...", flush=True)
        out["vacuum_s"] = await vacuum_tenants(f)

        total = events
        out["b"] = []
        for offered in rates:
            print(f"(b) offering {offered}/s for {seconds:.0f} s ...", flush=True)
            ids = await producer.paced(offered, seconds, path)
            total += len(ids)
            complete = await wait_applied(f, total, timeout=max(60.0, len(ids) / 50))
            await wait_acknowledged(f, timeout=60)
            flow = await measure_flow(f, f"{offered}/s offered", ids)
            flow.note = "" if complete else "TIMED OUT"
            out["b"].append((offered, flow))
            out["load"].append(loadavg())
            print(f"    producer {flow.producer_rate:,.0f}/s, delivered {flow.delivered_rate:,.0f}/s, "
                  f"p50 {flow.p(50):.1f} ms, p99 {flow.p(99):.1f} ms", flush=True)
    finally:
        out["sidecar_exit"] = stop_sidecars(sidecars)
    with psycopg.connect(f.buyer.dsn) as conn:
        out["buyer_outcomes"] = dict(conn.execute("SELECT outcome, count(*) FROM b2b_inbox GROUP BY 1").fetchall())
        out["buyer_quarantine"] = conn.execute("SELECT count(*) FROM b2b_quarantine").fetchone()[0]
        out["buyer_duplicate_pos"] = conn.execute(
            "SELECT count(*) - count(DISTINCT b2b_source_order_id) FROM purchasing_orders").fetchone()[0]
    return out


# -- where the time goes: the relay in-process, statements counted --------------------------------------

def _log_size(f: Fixture) -> int:
    return f.log_path.stat().st_size


_LOG_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.M)


def count_logged_statements(f: Fixture, offset: int, backend_pid: int) -> Counter:
    """Statements PostgreSQL logged for one backend since `offset` (log_statement = all)."""
    with open(f.log_path, "rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", "replace")
    starts = [m.start() for m in _LOG_ENTRY.finditer(text)] + [len(text)]
    marker = re.compile(rf"\[{backend_pid}\] LOG:  (?:statement|execute [^:]*): (.*)", re.S)
    kinds: Counter = Counter()
    for begin, end in itertools.pairwise(starts):
        match = marker.search(text[begin:end])
        if match and "log_statement" not in match.group(1):
            kinds[_statement_kind(match.group(1))] += 1
    return kinds


def _statement_kind(sql: str) -> str:
    text = " ".join(sql.split())
    head = text.split(" ", 1)[0].upper() if text else "?"
    if head in ("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT", "ROLLBACK"):
        return head
    for name, pattern in (("set actor", "SELECT set_config('ygg.actor'"),
                          ("insert inbox row (+ set actor)", "INTO b2b_inbox"),
                          ("lock inbound sequence (upsert)", "DO UPDATE SET last_sequence = b2b_inbound_sequences.last_sequence RETURNING"),
                          ("lock inbound sequences (upsert, fast pass)", "DO UPDATE SET last_sequence = s.last_sequence RETURNING"),
                          ("advance inbound sequence", "INTO b2b_inbound_sequences"),
                          ("advance inbound sequences (fast pass)", "UPDATE b2b_inbound_sequences"),
                          ("move orders (fast pass)", "SET state = m.state"),
                          ("insert purchase order + lines (one CTE)", "header AS"),
                          ("lock our order (SELECT ... FOR UPDATE)", "FOR UPDATE OF o"),
                          ("lookup approval/items/supplier/warehouse", "FROM b2b_approvals"),
                          ("create supplier", 'INTO "suppliers"'),
                          ("receipt: next outbox sequence", "b2b_order_sequences"),
                          ("receipt: insert outbox row", "INTO b2b_events"),
                          ("receipt applied: mark outbox row", "UPDATE b2b_events"),
                          ("load partners", "FROM b2b_partners")):
        if pattern in text:
            return name
    return text[:60]


async def apply_in_process(f: Fixture, tenant: Tenant, messages: list[InboundMessage], *,
                           log_statements: bool = False,
                           profiler: cProfile.Profile | None = None) -> tuple[float, Counter]:
    """The relay's batch apply (`apply_inbound_batch`), a batch per transaction, as the sidecar
    runs it minus the broker. Returns seconds and, if logged, the statements issued."""
    ctx = RelayContext(tenant.id, tenant.key)
    async with await psycopg.AsyncConnection.connect(tenant.dsn, autocommit=True) as conn:
        if log_statements:
            await conn.execute("SET log_statement = 'all'")
        offset = _log_size(f)
        outcomes: Counter = Counter()
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        for i in range(0, len(messages), BATCH):
            async with conn.transaction():
                for d in await apply_inbound_batch(conn, messages[i:i + BATCH], ctx):
                    outcomes[d.outcome] += 1
        took = time.perf_counter() - started
        if profiler:
            profiler.disable()
        kinds: Counter = Counter()
        if log_statements:
            await conn.execute("SET log_statement = 'none'")
            await asyncio.sleep(0.3)  # the logger writes asynchronously
            kinds = count_logged_statements(f, offset, conn.info.backend_pid)
    if set(outcomes) != {"applied"}:
        print(f"    note: in-process outcomes on {tenant.id}: {dict(outcomes)}", flush=True)
    return took, kinds


def profile_buckets(profiler: cProfile.Profile, events: int) -> list[tuple[str, float]]:
    """Own time (tottime) per package, in µs per event; cProfile's overhead inflates all of it."""
    buckets: Counter = Counter()
    for (filename, _, function), (_, _, tottime, _, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        if filename == "~":
            name = "C builtins (" + (re.sub(r"[<>]", "", function).split(" of ")[0][:40]) + ")"
            if "select" in function or "poll" in function:
                name = "idle: waiting for the database (selector)"
            elif "method 'send'" in function or "recv" in function or "sendall" in function:
                name = "socket send/recv"
            elif "PGconn" in function or "psycopg" in function:
                name = "psycopg (C)"
            else:
                name = "other C builtins"
        elif "site-packages/" in filename:
            name = filename.split("site-packages/", 1)[1].split("/", 1)[0]
            if name == "yggdrasil":
                name = "yggdrasil." + filename.split("yggdrasil/", 1)[1].split("/", 1)[0]
        elif "/yggdrasil/" in filename:
            name = "yggdrasil." + filename.split("/yggdrasil/", 1)[1].split("/", 1)[0]
        elif "/asyncio/" in filename:
            name = "asyncio"
        else:
            name = "python stdlib"
        buckets[name] += tottime
    return [(name, seconds / events * 1e6) for name, seconds in buckets.most_common()]


def outbox_messages(tenant: Tenant, event_type: str, limit: int) -> list[InboundMessage]:
    with psycopg.connect(tenant.dsn) as conn:
        rows = conn.execute("SELECT subject, envelope FROM b2b_events WHERE status = 'pending' AND event_type = %s "
                            "ORDER BY id LIMIT %s", (event_type, limit)).fetchall()
    return [InboundMessage(subject, bytes(raw)) for subject, raw in rows]


def receipt_bundles(f: Fixture, limit: int) -> list[InboundMessage]:
    """The buyer's queued receipts as its publisher sends them: the bundles its fast pass stored
    (a bundle per group of events), and receipts queued one by one packed per claim batch."""
    with psycopg.connect(f.buyer.dsn) as conn:
        rows = conn.execute("SELECT id, event_type, subject, envelope FROM b2b_events WHERE status = 'pending' "
                            "AND event_type LIKE 'b2b.receipt%%' ORDER BY id LIMIT %s", (limit,)).fetchall()
    stored = [InboundMessage(subject, bytes(raw)) for _, event_type, subject, raw in rows
              if event_type == "b2b.receipts"]
    single = [(row_id, raw) for row_id, event_type, _, raw in rows if event_type == "b2b.receipt"]
    bundler = ReceiptBundler(BUYER, f.buyer.key)
    return stored + [InboundMessage(message.subject, message.data)
                     for i in range(0, len(single), BATCH)
                     for message in bundler.bundle(SELLER, [QueuedReceipt(row_id, bytes(raw))
                                                            for row_id, raw in single[i:i + BATCH]])]


async def relay_analysis(f: Fixture, count: int) -> dict:
    """With the sidecars stopped: fresh seller events (the real create path), applied by the
    relay's code in-process on the buyer, then the buyer's receipts applied on the seller.
    Three sets: timed (`count`), profiled (`count`), statements logged (one batch)."""
    producer = Producer(f)
    total = 2 * count + BATCH
    await producer.backlog(total)
    orders = outbox_messages(f.seller, "sales.order.created", total)
    out: dict = {"count": count}
    out["buyer_seconds"], _ = await apply_in_process(f, f.buyer, orders[:count])
    profiler = cProfile.Profile()
    out["profiled_seconds"], _ = await apply_in_process(f, f.buyer, orders[count:2 * count], profiler=profiler)
    out["profile"] = profile_buckets(profiler, count)
    _, out["buyer_statements"] = await apply_in_process(f, f.buyer, orders[2 * count:], log_statements=True)
    bundles = receipt_bundles(f, total)  # of BATCH receipts each
    out["seller_seconds"], _ = await apply_in_process(f, f.seller, bundles[:count // BATCH])
    _, out["seller_statements"] = await apply_in_process(f, f.seller, bundles[2 * count // BATCH:],
                                                         log_statements=True)

    # The seller's write path with one connection, next to the backlog's four (audit chain head).
    _, took = await producer.backlog(BATCH * 2, connections=1)
    out["service_1conn_rate"] = BATCH * 2 / took
    _, took = await producer.backlog(BATCH * 4, path="outbox", connections=4)
    out["outbox_4conn_rate"] = BATCH * 4 / took
    # One awaited trivial statement: the floor of every round trip the relay makes.
    async with await psycopg.AsyncConnection.connect(f.buyer.dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for _ in range(1000):
            await conn.execute("SELECT 1")
        out["select1_us"] = (time.perf_counter() - started) / 1000 * 1e6

    # Pure CPU, per event: decode + checks + Ed25519 verify; its receipt, as the fast pass makes
    # it (an item, and its share of the group's signed bundle).
    async with await psycopg.AsyncConnection.connect(f.buyer.dsn) as conn:
        partners = await load_partners(conn)
    started = time.perf_counter()
    envelopes = [verify_message(m, partners, BUYER)[0] for m in orders[:count]]
    out["verify_us"] = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    bundler = ReceiptBundler(BUYER, f.buyer.key)
    for i in range(0, count, BATCH):
        bundler.sign(SELLER, applied_receipts(envelopes[i:i + BATCH]))
    out["receipt_sign_us"] = (time.perf_counter() - started) / count * 1e6
    return out


# -- ceilings ----------------------------------------------------------------------------------------

def _raw_consumer_process(url: str, count: int, ready, done) -> None:  # noqa: ANN001 - mp primitives
    asyncio.run(_raw_consume(url, count, ready, done))


async def _raw_consume(url: str, count: int, ready, done) -> None:  # noqa: ANN001
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(RAW_SUBJECT, durable=RAW_DURABLE, stream=RAW_STREAM, config=ConsumerConfig(
        name=RAW_DURABLE, durable_name=RAW_DURABLE, filter_subject=RAW_SUBJECT, deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=-1, max_ack_pending=1000))
    ready.set()
    cpu_started = time.process_time()
    got, deadline = 0, time.monotonic() + 120
    while got < count and time.monotonic() < deadline:
        try:
            messages = await sub.fetch(BATCH, timeout=1.0)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        for message in messages:
            await message.ack()
        got += len(messages)
    await nc.flush()
    done.put((got, time.time(), time.process_time() - cpu_started))
    await nc.close()


async def raw_jetstream(url: str, payloads: list[bytes], nats_pid: int) -> dict:
    """The same envelope bytes through a scratch stream with the module streams' settings;
    with the CPU seconds its processes used (this one publishing, the consumer, nats-server)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = dataclasses.replace(stream_config("sales"), name=RAW_STREAM, subjects=["bench.raw.>"],
                                 description="bench_federation.py scratch stream")
    await js.add_stream(config)
    mp = multiprocessing.get_context("spawn")
    ready, done = mp.Event(), mp.Queue()
    consumer = mp.Process(target=_raw_consumer_process, args=(url, len(payloads), ready, done))
    consumer.start()
    try:
        await asyncio.get_running_loop().run_in_executor(None, ready.wait, 30)
        cpu_before = {pid: _cpu_of(pid) for pid in (os.getpid(), nats_pid)}
        started_wall = time.time()
        started = time.perf_counter()
        for i in range(0, len(payloads), BATCH):
            acks = [await js.publish_async(RAW_SUBJECT, data, headers={"Nats-Msg-Id": str(uuid.uuid4())})
                    for data in payloads[i:i + BATCH]]
            await asyncio.gather(*acks)
        published = time.perf_counter() - started
        got, finished_wall, consumer_cpu = await asyncio.get_running_loop().run_in_executor(
            None, done.get, True, 150)
        publisher_cpu, nats_cpu = (_cpu_of(pid) - before for pid, before in cpu_before.items())
    finally:
        consumer.join(10)
        if consumer.is_alive():
            consumer.kill()
        with contextlib.suppress(Exception):
            await js.delete_stream(RAW_STREAM)
        await nc.close()
    return {"rate": got / (finished_wall - started_wall), "publish_rate": len(payloads) / published, "got": got,
            "cpu_s": publisher_cpu + consumer_cpu + nats_cpu}


async def _raw_targets(conn: psycopg.AsyncConnection) -> tuple[int, int, list[int]]:
    """The buyer's supplier for the seller, its warehouse and three items, for the raw ceilings."""
    supplier = (await (await conn.execute(
        "SELECT id FROM suppliers WHERE partner_tenant_id = %s", (SELLER,))).fetchone())[0]
    warehouse = (await (await conn.execute("SELECT min(id) FROM warehouses")).fetchone())[0]
    items = [row[0] for row in await (await conn.execute("SELECT id FROM items ORDER BY id LIMIT 3")).fetchall()]
    await conn.commit()
    return supplier, warehouse, items


# Purchase orders with their lines and inbox rows, for every event of `refs`, in one statement:
# one event at a time for the per-event ceilings, a whole batch for the set-based one (what the
# relay's fast pass does, minus every check, the receipts and the sequences).
_RAW_APPLY = """
    WITH actor AS (SELECT set_config('ygg.actor', 'b2b:acme', true)),
    header AS (
        INSERT INTO purchasing_orders (supplier_id, warehouse_id, currency, reference, b2b_source_tenant,
                                       b2b_source_order_id, b2b_source_state)
        SELECT %(supplier)s, %(warehouse)s, 'EUR', r.ref, 'acme-raw', r.ref, 'draft'
          FROM actor, unnest(%(refs)s::text[]) AS r(ref)
        RETURNING id
    ), lines AS (
        INSERT INTO purchasing_order_lines (order_id, line_no, item_id, quantity, unit_price)
        SELECT header.id, l.line_no, l.item_id, l.quantity, l.unit_price
          FROM header, unnest(%(line_nos)s::int[], %(item_ids)s::bigint[], %(quantities)s::numeric[],
                              %(prices)s::numeric[]) AS l(line_no, item_id, quantity, unit_price)
    ), inbox AS (
        INSERT INTO b2b_inbox (source_tenant, event_id, event_type, aggregate_type, aggregate_id, sequence,
                               outcome, applied_at)
        SELECT 'acme-raw', e.event_id, 'sales.order.created', 'sales_order', e.ref, 1, 'applied', now()
          FROM actor, unnest(%(event_ids)s::uuid[], %(refs)s::text[]) AS e(event_id, ref)
    )
    SELECT count(*) FROM header
"""


async def raw_postgres_set_based(f: Fixture, count: int, tag: str) -> tuple[float, float]:
    """Per batch of events: one statement writing every purchase order, its 3 lines and
    the inbox rows, in one transaction; audit triggers fire on every order and line. Returns
    the rate and the CPU seconds used (this process and PostgreSQL)."""
    async with await psycopg.AsyncConnection.connect(f.buyer.dsn) as conn:
        before = cpu_snapshot({}, f.postmaster_pid)  # with our backend in it
        supplier, warehouse, items = await _raw_targets(conn)
        line = {"line_nos": [1, 2, 3], "item_ids": items, "quantities": [Decimal(1), Decimal(2), Decimal(3)],
                "prices": [Decimal(p) for p in PRICES]}
        started = time.perf_counter()
        for i in range(0, count, BATCH):
            refs = [f"{tag}-{n}" for n in range(i, min(count, i + BATCH))]
            async with conn.transaction():
                await conn.execute(_RAW_APPLY, {"supplier": supplier, "warehouse": warehouse, "refs": refs,
                                                    "event_ids": [uuid.uuid4() for _ in refs], **line})
        took = time.perf_counter() - started
        cpu = sum(cpu_delta(before, cpu_snapshot({}, f.postmaster_pid)).values())
    return count / took, cpu


async def raw_postgres(f: Fixture, count: int, pipelined: bool, tag: str) -> float:
    """Per event: savepoint, purchase order + 3 lines + inbox row in one statement, release;
    a batch of events per transaction; audit triggers fire on the order and its lines."""
    async with await psycopg.AsyncConnection.connect(f.buyer.dsn) as conn:
        supplier, warehouse, items = await _raw_targets(conn)
        params = [{"supplier": supplier, "warehouse": warehouse, "refs": [f"{tag}-{n}"], "event_ids": [uuid.uuid4()],
                   "line_nos": [1, 2, 3], "item_ids": items, "quantities": [Decimal(1), Decimal(2), Decimal(3)],
                   "prices": [Decimal(p) for p in PRICES]} for n in range(count)]

        async def batch(chunk: list[dict]) -> None:
            async with conn.transaction():
                for p in chunk:
                    async with conn.transaction():  # savepoint per event, as the relay does
                        await conn.execute(_RAW_APPLY, p)

        started = time.perf_counter()
        for i in range(0, count, BATCH):
            if pipelined:
                async with conn.pipeline():
                    await batch(params[i:i + BATCH])
            else:
                await batch(params[i:i + BATCH])
        took = time.perf_counter() - started
    return count / took


# -- output --------------------------------------------------------------------------------------------

class DefaultSyncNats(EmbeddedNats):
    """For reference only: nats-server with JetStream's default sync (every 2 minutes)."""

    def render_config(self) -> str:
        return "\n".join(line for line in super().render_config().splitlines()
                         if "sync_interval" not in line) + "\n"


def combined_bound(out: dict, ceilings: dict, relay: dict, slower: float) -> str:
    """What the two halves' own CPU cost allows when they share this machine's cores.

    Each ceiling runs alone; end to end does the work of both on the same cores. The CPU
    seconds per event the ceilings used (every process: clients and servers) add up to a floor
    under what end to end must spend, whatever else it does."""
    cores = os.cpu_count() or 1
    js_ms = ceilings["js"]["cpu_s"] / ceilings["js"]["got"] * 1000
    pg_ms = ceilings["pg_set_cpu_s"] / out["a"].orders * 1000
    crypto_ms = (relay["verify_us"] + relay["receipt_sign_us"]) / 1000
    e2e_ms = sum(out["a_cpu"].values()) / out["a_cpu_events"] * 1000
    bare = cores / (js_ms + pg_ms) * 1000
    checked = cores / (js_ms + pg_ms + crypto_ms) * 1000
    return (f"CPU per event, every process counted: raw JetStream {js_ms:.2f} ms, raw PostgreSQL set-based "
            f"{pg_ms:.2f} ms; end to end {e2e_ms:.2f} ms (during (a), receipts included). The two "
            f"ceilings' work alone on the same {cores} cores: at most **{bare:,.0f}/s**; plus the checks' "
            f"cryptography (decode, checks and Ed25519 verify, receipt in a signed bundle: {crypto_ms:.2f} ms): "
            f"at most **{checked:,.0f}/s**. The target ({0.5 * slower:,.0f}/s) asks for {0.5 * slower / checked:.0%} "
            f"of the second; end to end reaches {out['a'].delivered_rate / checked:.0%} of it, and needs "
            f"{cores / (0.5 * slower) * 1000:.2f} ms per event or less at full use of the cores.")


def report(out: dict, ceilings: dict, relay: dict, args) -> str:
    a: Flow = out["a"]
    js, js_default = ceilings["js"], ceilings["js_default"]
    # The fastest raw way to write the same rows is the ceiling (the relay's fast pass writes
    # set-based too).
    pg_best = max(ceilings["pg_awaited"], ceilings["pg_pipelined"], ceilings["pg_set"])
    slower = min(js["rate"], pg_best)
    e2e = a.delivered_rate
    relay_rate = relay["count"] / relay["buyer_seconds"]
    receipts_rate = relay["count"] / relay["seller_seconds"]

    def row(label: str, rate: float) -> str:
        return f"| {label} | {rate:,.0f} | {e2e / rate:.0%} |"

    lines = [
        f"### Throughput: end to end vs ceilings ({a.orders} events, 3-line orders)",
        "",
        "| path | events/s | end to end / this |",
        "|---|---:|---:|",
        f"| **end to end** (a): seller commit -> buyer PO commit, first to last | **{e2e:,.0f}** | — |",
        row("ceiling: raw JetStream publish + consume, same bytes, `sync_interval: always`", js["rate"]),
        row("ceiling: raw PostgreSQL apply (PO + 3 lines + inbox, savepoints, triggers), pipelined",
            ceilings["pg_pipelined"]),
        row("ceiling: raw PostgreSQL apply, same, each statement awaited", ceilings["pg_awaited"]),
        row(f"ceiling: raw PostgreSQL apply, same rows, one statement per {BATCH} events", ceilings["pg_set"]),
        row("relay's `apply_inbound_batch` in-process on the buyer, no broker", relay_rate),
        row(f"seller applying the receipts (`apply_inbound_batch`, bundles of {BATCH}), in-process", receipts_rate),
        row("reference, not the same durability: raw JetStream with default sync", js_default["rate"]),
        "",
        f"Target: end to end >= 50% of the slower ceiling ({slower:,.0f}/s): {e2e / slower:.0%} -> "
        f"**{'met' if e2e >= 0.5 * slower else 'missed'}**.",
        "",
        combined_bound(out, ceilings, relay, slower),
        "",
        f"Raw JetStream publish alone (acks awaited per {BATCH}): {js['publish_rate']:,.0f}/s "
        f"(default sync: {js_default['publish_rate']:,.0f}/s). The seller created the backlog through "
        f"`create_sales_order` at {out['backlog_create_rate']:,.0f} orders/s (4 connections, sidecars not "
        f"running). Every receipt was back on the seller {out['ack_wall']:.1f} s after the sidecars started "
        f"(last purchase order: {out['a_wall']:.1f} s).",
        "",
        f"### Latency, seller commit -> buyer purchase order commit (producer for (b): `{args.producer}` path)",
        "",
        f"Before (b), the bench ran VACUUM (ANALYZE) on both tenant databases ({out['vacuum_s']:.1f} s): the "
        "work the drain left for autovacuum, done before the fixed rates rather than during them.",
        "",
        "| load | orders | applied | producer achieved /s | delivered /s | p50 ms | p99 ms | max ms "
        "| p50 / p99 ms by created_at | p50 / p99 ms by stage: to claim, to buyer transaction, buyer transaction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for flow in [a, *(flow for _, flow in out["b"])]:
        lines.append(
            f"| {flow.label}{' ' + flow.note if flow.note else ''} | {flow.orders} | {flow.applied} "
            f"| {flow.producer_rate:,.0f} | {flow.delivered_rate:,.0f} | {flow.p(50):.1f} | {flow.p(99):.1f} "
            f"| {max(flow.latencies_ms, default=float('nan')):.1f} | {flow.p(50, True):.1f} / {flow.p(99, True):.1f} "
            f"| {', '.join(f'{percentile(v, 50):.1f} / {percentile(v, 99):.1f}' for v in flow.stages_ms.values())} |")
    at200 = next((flow for offered, flow in out["b"] if offered == 200), None)
    if at200:
        lines += ["", f"Target: p99 < 100 ms at 200/s: {at200.p(99):.1f} ms -> "
                      f"**{'met' if at200.p(99) < 100 else 'missed'}**."]
    lines += ["", "### Where the time goes",
              "", f"CPU seconds during (a), from the seller's first publish to the last receipt back "
                  f"({out['a_cpu_events']} events, {out['a_cpu_wall']:.1f} s wall; {os.cpu_count()} cores = "
                  f"{(os.cpu_count() or 1) * out['a_cpu_wall']:.1f} CPU s available):", "",
              "| process | CPU s | ms per event |", "|---|---:|---:|"]
    for name, cpu in sorted(out["a_cpu"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {cpu:.2f} | {cpu / out['a_cpu_events'] * 1000:.2f} |")
    for side, label in (("buyer_statements", f"buyer ({BUYER}) applying {BATCH} `sales.order.created`"),
                        ("seller_statements", f"seller ({SELLER}) applying {BATCH} receipts (one `b2b.receipts`)")):
        kinds: Counter = relay[side]
        lines += ["", f"Statements (each one awaited round trip) issued by the relay's code, {label}: "
                      f"{sum(kinds.values())}, {sum(kinds.values()) / BATCH:.1f} per event:", "",
                  f"| statement | per {BATCH} events |", "|---|---:|"]
        lines += [f"| {kind} | {n} |" for kind, n in kinds.most_common()]
    lines += ["", f"Python own time per event in the buyer's `apply_inbound_batch`, by package (cProfile; "
                  f"{relay['count'] / relay['profiled_seconds']:,.0f}/s under the profiler, "
                  f"{relay_rate:,.0f}/s without):", "", "| package | µs per event |", "|---|---:|"]
    lines += [f"| {name} | {us:,.0f} |" for name, us in relay["profile"][:12]]
    lines += ["", f"Pure CPU per event, measured alone: envelope decode + checks + Ed25519 verify "
                  f"{relay['verify_us']:.0f} µs; its receipt, with its share of a signed bundle of {BATCH}, "
                  f"{relay['receipt_sign_us']:.0f} µs. "
                  f"One awaited `SELECT 1` (psycopg async, TCP loopback): {relay['select1_us']:.0f} µs.",
              "", f"Seller write path: `create_sales_order` with 1 connection {relay['service_1conn_rate']:,.0f}/s, "
                  f"with 4 {out['backlog_create_rate']:,.0f}/s; `enqueue_event` alone with 4 connections "
                  f"{relay['outbox_4conn_rate']:,.0f}/s (the sidecars stopped).",
              "", f"Buyer inbox outcomes (sidecar runs): {out['buyer_outcomes']}; quarantined "
                  f"{out['buyer_quarantine']}; duplicate purchase orders {out['buyer_duplicate_pos']}; sidecar exit "
                  f"codes {out['sidecar_exit']}; load average (1 min) at each step: {', '.join(out['load'])}."]
    text = "\n".join(lines)
    print(text)
    return text


async def run(f: Fixture, args) -> None:
    nc = await nats.connect(f.broker_url)
    await ensure_streams(nc.jetstream())
    await nc.close()
    rates = [int(r) for r in args.rates.split(",")]
    out = await end_to_end(f, args.events, args.seconds, rates, args.producer)
    print(f"where the time goes: the relay's code in-process on {args.analysis} fresh events ...", flush=True)
    relay = await relay_analysis(f, args.analysis)
    with psycopg.connect(f.seller.dsn) as conn:
        payloads = [bytes(row[0]) for row in conn.execute(
            "SELECT envelope FROM b2b_events WHERE event_type = 'sales.order.created' ORDER BY id LIMIT %s",
            (args.events,)).fetchall()]
    ceilings = {}
    print(f"ceiling: raw JetStream, {len(payloads)} envelopes ({sum(map(len, payloads)) // len(payloads)} bytes "
          "average) ...", flush=True)
    ceilings["js"] = await raw_jetstream(f.broker_url, payloads, f.nats_pid)
    print(f"ceiling: raw PostgreSQL apply, {args.events} events, awaited, pipelined and set-based ...", flush=True)
    ceilings["pg_awaited"] = await raw_postgres(f, args.events, pipelined=False, tag="raw-awaited")
    ceilings["pg_pipelined"] = await raw_postgres(f, args.events, pipelined=True, tag="raw-pipelined")
    ceilings["pg_set"], ceilings["pg_set_cpu_s"] = await raw_postgres_set_based(f, args.events, tag="raw-set")
    print("reference: raw JetStream on a second nats-server with the default sync ...", flush=True)
    reference = DefaultSyncNats(f.tmp / "nats-default-sync")
    reference.start()
    try:
        ceilings["js_default"] = await raw_jetstream(reference.url, payloads, reference.pid)
    finally:
        reference.stop()
    out["load"].append(loadavg())
    print()
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {args.events} events, {args.seconds:.0f} s per offered rate")
    print()
    report(out, ceilings, relay, args)


def sidecar_setting(text: str) -> tuple[str, str]:
    """`relay_batch_size=500` as the sidecar's environment variable (YGG_RELAY_BATCH_SIZE)."""
    name, sep, value = text.partition("=")
    if not sep or name.strip().lower() not in Settings.model_fields:
        raise ValueError(f"--sidecar-setting {text!r}: expected NAME=VALUE with NAME a setting "
                         "(see src/yggdrasil/settings.py)")
    return f"YGG_{name.strip().upper()}", value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each offered rate (default 6)")
    parser.add_argument("--events", type=int, default=10_000,
                        help="backlog for the maximum and the ceilings (default 10,000)")
    parser.add_argument("--rates", default="200,1000", help="offered rates per second, comma-separated")
    parser.add_argument("--analysis", type=int, default=2 * BATCH,
                        help=f"events for the in-process relay analysis, a multiple of {BATCH} (default {2 * BATCH})")
    parser.add_argument("--sidecar-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for both sidecars, to try a variant (e.g. relay_batch_size=500); repeatable")
    parser.add_argument("--producer", choices=("outbox", "service"), default="outbox",
                        help="how (b) writes: enqueue_event alone (default), or the full create_sales_order")
    args = parser.parse_args()
    try:
        sidecar_env = dict(sidecar_setting(text) for text in args.sidecar_setting)
    except ValueError as error:
        parser.error(str(error))
    if args.analysis <= 0 or args.analysis % BATCH:
        parser.error(f"--analysis must be a positive multiple of {BATCH} (receipts go in bundles of {BATCH})")

    with tempfile.TemporaryDirectory(prefix="ygg-bench-federation-") as tmp:
        tmp_path = Path(tmp)
        postgres = EmbeddedPostgres(tmp_path / "postgres")
        broker = EmbeddedNats(tmp_path / "nats")
        try:
            postgres.start()
            # Commit timestamps, so that latency is measured commit to commit (needs a restart).
            with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
            postgres.stop()
            postgres.start()
            tenants = []
            for tenant_id in (SELLER, BUYER):
                db.create_database(postgres.dsn(), f"ygg_{tenant_id}")
                dsn = postgres.dsn(f"ygg_{tenant_id}")
                db.apply_migrations(dsn, "yggdrasil.tenant")
                key = generate_keypair()[0]
                key_path = tmp_path / f"{tenant_id}.key"
                write_signing_key(key_path, key)
                tenants.append(Tenant(tenant_id, dsn, key, key_path))
            broker.start()
            customer_id, warehouse_id, item_ids = asyncio.run(seed(*tenants))
            fixture = Fixture(tenants[0], tenants[1], customer_id, warehouse_id, item_ids, broker.url,
                              postgres.pid, postgres.data_dir / "server.log", tmp_path, broker.pid, sidecar_env)
            asyncio.run(run(fixture, args))
        finally:
            broker.stop()
            postgres.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
