"""Sales-order throughput of one tenant server, next to the same SQL run directly.

    .venv/bin/python bench/bench_orders.py [--seconds N]

Starts its own embedded PostgreSQL (temporary directory) and one `ygg tenant serve` process,
seeds a customer, a warehouse and three items with stock through the API, then measures:

  (a) sales orders with 3 lines created per second over HTTP (httpx.AsyncClient, keep-alive),
      with 1 and 8 concurrent clients;
  (b) the same transaction run directly with psycopg against the same database, with 1 and 8
      connections: the statements the server issues for POST /api/v1/sales-orders, built by
      the server's own repository (`PgOrderRepository`), with the actor set for the audit
      triggers, so the same triggers fire;
  (c) cached GET /api/v1/sales-orders/{id} with 8 clients: requests per second, p50/p99.

Each measurement runs for N seconds. No assertions: figures go to bench/RESULTS.md by hand.
The client, the server and PostgreSQL share the machine, as they would on a small on-premises
box; the client is one asyncio loop in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg

from yggdrasil import db
from yggdrasil.devstack.ports import free_port
from yggdrasil.devstack.postgres import EmbeddedPostgres
from yggdrasil.devstack.supervisor import EmbeddedSpec, ProcessSpec, RestartPolicy, Supervisor
from yggdrasil.tenant.adapters.orders import SALES, PgOrderRepository
from yggdrasil.tenant.auth import create_token
from yggdrasil.tenant.domain.orders import OrderLine
from yggdrasil.tenant.domain.sales import SalesOrder

HOST = "127.0.0.1"
ACTOR = "bench-admin"


@dataclass
class Result:
    label: str
    clients: int
    count: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


async def run_for(seconds: float, clients: int, label: str,
                  make_worker: Callable[[int], Awaitable[Callable[[], Awaitable[bool]]]],
                  close: Callable[[], Awaitable[None]] | None = None) -> Result:
    """Run `clients` workers in a closed loop for `seconds`; each worker calls its `step`
    (returns success) back to back. A short warm-up is not counted."""
    steps = [await make_worker(n) for n in range(clients)]
    for step in steps:  # warm-up: connections open, statements prepared
        await step()
    latencies: list[float] = []
    counts = {"ok": 0, "err": 0}
    deadline = time.perf_counter() + seconds

    async def loop(step: Callable[[], Awaitable[bool]]) -> None:
        while True:
            started = time.perf_counter()
            if started >= deadline:
                return
            ok = await step()
            latencies.append(time.perf_counter() - started)
            counts["ok" if ok else "err"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(step) for step in steps))
    elapsed = time.perf_counter() - started
    if close:
        await close()
    return Result(label, clients, counts["ok"], counts["err"], elapsed, latencies)


# -- setup ------------------------------------------------------------------------------------------

@dataclass
class Fixture:
    url: str
    token: str
    dsn: str
    customer_id: int
    warehouse_id: int
    items: list[tuple[int, Decimal]]  # (item id, list price)


def seed(url: str, token: str) -> tuple[int, int, list[tuple[int, Decimal]]]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        def post(path: str, body: dict) -> dict:
            r = http.post(path, json=body)
            if r.status_code >= 300:
                raise SystemExit(f"seeding failed: POST {path} -> {r.status_code} {r.text}")
            return r.json()

        customer = post("/api/v1/customers", {"code": "BENCH-CUSTOMER", "name": "Bench customer", "currency": "EUR"})
        warehouse = post("/api/v1/warehouses", {"code": "BENCH", "name": "Bench warehouse"})
        items = []
        for n, price in enumerate(("12.5000", "7.2500", "99.9900"), start=1):
            item = post("/api/v1/items", {"sku": f"BENCH-{n}", "name": f"Bench item {n}", "unit": "pcs",
                                          "list_price": price, "cost": "1.00", "reorder_point": "0"})
            post("/api/v1/stock/adjustments", {"item_id": item["id"], "warehouse_id": warehouse["id"],
                                               "quantity": "1000000", "note": "bench stock"})
            items.append((item["id"], Decimal(price)))
    return customer["id"], warehouse["id"], items


def order_body(f: Fixture) -> dict:
    return {"customer_id": f.customer_id, "warehouse_id": f.warehouse_id, "currency": "EUR",
            "lines": [{"item_id": item_id, "quantity": str(n + 1), "unit_price": str(price)}
                      for n, (item_id, price) in enumerate(f.items)]}


# -- (a) and (c): over HTTP -------------------------------------------------------------------------

def http_workers(f: Fixture, request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
                 ok: Callable[[httpx.Response], bool]):
    clients: list[httpx.AsyncClient] = []

    async def make(_: int) -> Callable[[], Awaitable[bool]]:
        # One client, hence one keep-alive connection, per simulated user.
        client = httpx.AsyncClient(base_url=f.url, headers={"Authorization": f"Bearer {f.token}"},
                                   timeout=30, limits=httpx.Limits(max_connections=1))
        clients.append(client)

        async def step() -> bool:
            return ok(await request(client))

        return step

    async def close() -> None:
        for client in clients:
            await client.aclose()

    return make, close


async def bench_http_create(f: Fixture, clients: int, seconds: float) -> Result:
    body = order_body(f)
    make, close = http_workers(f, lambda c: c.post("/api/v1/sales-orders", json=body),
                               lambda r: r.status_code == 201)
    return await run_for(seconds, clients, "create order, HTTP", make, close)


async def bench_http_get(f: Fixture, clients: int, seconds: float) -> Result:
    async with httpx.AsyncClient(base_url=f.url, headers={"Authorization": f"Bearer {f.token}"}) as http:
        r = await http.post("/api/v1/sales-orders", json=order_body(f))
        r.raise_for_status()
        order_id = r.json()["id"]
        (await http.get(f"/api/v1/sales-orders/{order_id}")).raise_for_status()  # now cached
    # A response not served from the cache counts as an error: this measures the cache.
    make, close = http_workers(f, lambda c: c.get(f"/api/v1/sales-orders/{order_id}"),
                               lambda r: r.status_code == 200 and r.headers.get("x-cache") == "hit")
    return await run_for(seconds, clients, "cached GET order, HTTP", make, close)


# -- (b): the same transaction, directly ---------------------------------------------------------------

async def bench_direct_create(f: Fixture, clients: int, seconds: float) -> Result:
    """What the server does for POST /api/v1/sales-orders, minus HTTP, JSON, auth and the pool:
    BEGIN; set the actor and request id for the audit triggers; one read that checks the
    customer, warehouse and items; one INSERT of the header with its lines; COMMIT."""
    connections: list[psycopg.AsyncConnection] = []
    item_ids = [item_id for item_id, _ in f.items]

    async def make(_: int) -> Callable[[], Awaitable[bool]]:
        conn = await psycopg.AsyncConnection.connect(f.dsn)
        connections.append(conn)
        repo = PgOrderRepository(conn, SALES)

        async def step() -> bool:
            order = SalesOrder.new(
                customer_id=f.customer_id, warehouse_id=f.warehouse_id, currency="EUR",
                lines=[OrderLine(item_id=item_id, quantity=Decimal(n + 1), unit_price=price)
                       for n, (item_id, price) in enumerate(f.items)],
            )
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('ygg.actor', %s, true), set_config('ygg.request_id', %s, true)",
                    (ACTOR, uuid.uuid4().hex),
                )
                refs = await repo.references(party_id=f.customer_id, warehouse_id=f.warehouse_id, item_ids=item_ids)
                if not (refs.party_found and refs.warehouse_found):
                    return False
                await repo.add(order)
            return order.id is not None

        return step

    async def close() -> None:
        for conn in connections:
            await conn.close()

    return await run_for(seconds, clients, "create order, direct SQL", make, close)


# -- output --------------------------------------------------------------------------------------------

def print_table(http: dict[int, Result], direct: dict[int, Result], get: Result) -> str:
    lines = [
        "| sales orders (3 lines) created/s | HTTP | direct SQL | HTTP / direct "
        "| HTTP p50 ms | HTTP p99 ms | direct p50 ms | direct p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clients in sorted(http):
        h, d = http[clients], direct[clients]
        lines.append(
            f"| {clients} client{'s' if clients > 1 else ''} | {h.rate:,.0f} | {d.rate:,.0f} | "
            f"{h.rate / d.rate:.0%} | {h.percentile(50):.1f} | {h.percentile(99):.1f} | "
            f"{d.percentile(50):.1f} | {d.percentile(99):.1f} |"
        )
    lines += [
        "",
        "| cached GET /api/v1/sales-orders/{id} | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| {get.clients} clients | {get.rate:,.0f} | {get.percentile(50):.2f} | {get.percentile(99):.2f} |",
    ]
    errors = [r for r in (*http.values(), *direct.values(), get) if r.errors]
    if errors:
        lines.append("")
        lines += [f"errors: {r.label} with {r.clients} clients: {r.errors}" for r in errors]
    text = "\n".join(lines)
    print(text)
    return text


async def measure(f: Fixture, seconds: float, concurrency: list[int]) -> tuple[dict, dict, Result]:
    http, direct = {}, {}
    for clients in concurrency:
        print(f"HTTP create, {clients} client(s), {seconds:.0f} s ...", flush=True)
        http[clients] = await bench_http_create(f, clients, seconds)
        print(f"direct create, {clients} connection(s), {seconds:.0f} s ...", flush=True)
        direct[clients] = await bench_direct_create(f, clients, seconds)
    print(f"cached GET, {max(concurrency)} clients, {seconds:.0f} s ...", flush=True)
    get = await bench_http_get(f, max(concurrency), seconds)
    return http, direct, get


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each measurement (default 8)")
    parser.add_argument("--clients", default="1,8", help="concurrency levels, comma-separated (default 1,8)")
    args = parser.parse_args()
    concurrency = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory(prefix="ygg-bench-") as tmp:
        tmp_path = Path(tmp)
        postgres = EmbeddedPostgres(tmp_path / "postgres")
        port = free_port(HOST)
        supervisor = Supervisor([EmbeddedSpec("postgres", postgres, stage=0, stop_signal=signal.SIGINT)])
        try:
            supervisor.start_all()
            db.create_database(postgres.dsn(), "ygg_bench")
            dsn = postgres.dsn("ygg_bench")
            db.apply_migrations(dsn, "yggdrasil.tenant")
            with psycopg.connect(dsn) as conn:
                token = create_token(conn, ACTOR, "admin", name="bench")
            url = f"http://{HOST}:{port}"
            supervisor.add(ProcessSpec(
                "tenant:bench",
                [sys.executable, "-m", "yggdrasil", "tenant", "serve", "--host", HOST, "--port", str(port),
                 "--dsn", dsn, "--no-migrate"],
                log_file=tmp_path / "tenant.log",
                # One token drives all clients: lift the per-token rate limit (200/s by default)
                # so that it measures the server, not the limiter. Everything else is default.
                env={"YGG_TENANT_ID": "bench", "YGG_RATE_LIMIT_PER_SECOND": "1000000",
                     "YGG_RATE_LIMIT_BURST": "1000000"},
                health_url=f"{url}/health", stage=1, restart=RestartPolicy(enabled=False),
            ))
            supervisor.start_all()
            customer_id, warehouse_id, items = seed(url, token)
            fixture = Fixture(url, token, dsn, customer_id, warehouse_id, items)
            http, direct, get = asyncio.run(measure(fixture, args.seconds, concurrency))
            print()
            print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, "
                  f"Python {platform.python_version()}, {args.seconds:.0f} s per measurement")
            print_table(http, direct, get)
        finally:
            supervisor.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
