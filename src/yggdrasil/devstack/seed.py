"""Sample data for `ygg demo`, created through each tenant server's HTTP API (so it gets audit
rows, validation and, later, outbox events exactly as a user's data would).

Every tenant gets two warehouses, a catalogue with stock, local customers and suppliers, every
other demo tenant as both a customer and a supplier (linked by `partner_tenant_id`, so their
orders can federate), and a few sales and purchase orders in each state.

The coordination plane (`ygg_central`) is seeded through the mesh's registry adapter and the
portal's services, the code the mesh API, the portal and their CLIs run: every demo tenant in
the registry with an active partnership between each pair (`register_in_mesh`), and per tenant
an organization owning it, an owner who can sign in, a subscription and a sample support ticket
(`seed_portal_organization`). Both only add what is missing, so they run on every start.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from yggdrasil.portal.domain.accounts import Passwords

log = logging.getLogger(__name__)


class SeedError(Exception):
    """The tenant server refused a sample record; the message carries its answer."""


@dataclass(frozen=True)
class ItemSeed:
    sku: str
    name: str
    list_price: str
    cost: str
    unit: str = "pcs"
    reorder_point: str = "0"
    # Quantity put into each warehouse (by code) at the start.
    stock: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Catalogue:
    warehouses: tuple[tuple[str, str], ...]
    items: tuple[ItemSeed, ...]
    customers: tuple[tuple[str, str], ...]
    suppliers: tuple[tuple[str, str], ...]


CATALOGUES: dict[str, Catalogue] = {
    "acme": Catalogue(
        warehouses=(("MAIN", "ACME main warehouse"), ("EAST", "ACME east depot")),
        items=(
            ItemSeed("ACME-ANVIL", "Anvil, 50 kg", "120.00", "70.00", reorder_point="10",
                     stock=(("MAIN", "80"), ("EAST", "20"))),
            ItemSeed("ACME-SKATES", "Rocket skates", "349.00", "210.00", "pair", reorder_point="5",
                     stock=(("MAIN", "40"),)),
            ItemSeed("ACME-MAGNET", "Giant horseshoe magnet", "89.50", "41.00", reorder_point="8",
                     stock=(("MAIN", "60"), ("EAST", "15"))),
            ItemSeed("ACME-SEED", "Bird seed, 25 kg bag", "19.90", "8.50", "bag", reorder_point="50",
                     stock=(("MAIN", "300"),)),
            # Kept below its reorder point, so the report has something to show.
            ItemSeed("ACME-HOLE", "Portable hole", "499.00", "5.00", reorder_point="12",
                     stock=(("MAIN", "7"),)),
            # Bought from BRAVO: its SKUs map to these (TRADED_ITEMS).
            ItemSeed("ACME-HELMET", "Safety helmet (bought from BRAVO)", "55.00", "39.00", reorder_point="4",
                     stock=(("MAIN", "8"),)),
            ItemSeed("ACME-ROPE", "Climbing rope, 30 m (bought from BRAVO)", "99.00", "74.00", "roll",
                     reorder_point="3", stock=(("EAST", "5"),)),
        ),
        customers=(("WILE-E", "Wile E. Coyote Ltd"), ("ROADRUNNER", "Roadrunner Logistics")),
        suppliers=(("DESERT-FORGE", "Desert Forge Ironworks"), ("CANYON-CHEM", "Canyon Chemicals")),
    ),
    "bravo": Catalogue(
        warehouses=(("STORE", "BRAVO store room"), ("DOCK", "BRAVO loading dock")),
        items=(
            ItemSeed("BRV-ANVIL", "Anvil, 50 kg (bought from ACME)", "159.00", "120.00", reorder_point="6",
                     stock=(("STORE", "12"),)),
            ItemSeed("BRV-SKATES", "Rocket skates (bought from ACME)", "449.00", "349.00", "pair",
                     reorder_point="4", stock=(("STORE", "6"),)),
            ItemSeed("BRV-HELMET", "Safety helmet", "39.00", "17.25", reorder_point="20",
                     stock=(("STORE", "45"), ("DOCK", "10"))),
            ItemSeed("BRV-ROPE", "Climbing rope, 30 m", "74.00", "31.00", "roll", reorder_point="10",
                     stock=(("STORE", "25"),)),
        ),
        customers=(("MESA-OUTFITTERS", "Mesa Outfitters"), ("BUTTE-SPORTS", "Butte Sports Club")),
        suppliers=(("HELMET-WORKS", "Helmet Works GmbH"), ("ROPE-CO", "Rope & Co")),
    ),
}


# What each demo tenant buys from another: (buyer, seller) -> (the seller's SKU, the buyer's SKU).
# The buyer records these in its partner item cross-reference (`ygg partner map-item`), so the
# seller's order lines apply without waiting for a person. Pairs not listed map the seller's
# first two items to the buyer's first two.
TRADED_ITEMS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("bravo", "acme"): (("ACME-ANVIL", "BRV-ANVIL"), ("ACME-SKATES", "BRV-SKATES")),
    ("acme", "bravo"): (("BRV-HELMET", "ACME-HELMET"), ("BRV-ROPE", "ACME-ROPE")),
}


def catalogue_of(tenant_id: str) -> Catalogue:
    return CATALOGUES.get(tenant_id) or generic_catalogue(tenant_id)


def traded_items(buyer: str, seller: str) -> tuple[tuple[str, str], ...]:
    """(seller's SKU, buyer's SKU) for everything `buyer` buys from `seller` in the demo."""
    if (buyer, seller) in TRADED_ITEMS:
        return TRADED_ITEMS[(buyer, seller)]
    pairs = zip(catalogue_of(seller).items[:2], catalogue_of(buyer).items[:2], strict=False)
    return tuple((sold.sku, bought.sku) for sold, bought in pairs)


def generic_catalogue(tenant_id: str) -> Catalogue:
    prefix = tenant_id.upper()[:8]
    return Catalogue(
        warehouses=(("MAIN", f"{prefix} main warehouse"), ("SPARE", f"{prefix} spare parts")),
        items=(
            ItemSeed(f"{prefix}-WIDGET", "Widget", "12.50", "6.00", reorder_point="20", stock=(("MAIN", "200"),)),
            ItemSeed(f"{prefix}-GADGET", "Gadget", "49.00", "22.00", reorder_point="5",
                     stock=(("MAIN", "30"), ("SPARE", "10"))),
            ItemSeed(f"{prefix}-GIZMO", "Gizmo", "7.25", "3.10", "box", reorder_point="40", stock=(("MAIN", "25"),)),
        ),
        customers=((f"{prefix}-RETAIL", f"{prefix} retail customer"),),
        suppliers=((f"{prefix}-PARTS", f"{prefix} parts supplier"),),
    )


def _ok(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 300:
        raise SeedError(f"{what}: {response.request.method} {response.request.url.path} answered "
                        f"{response.status_code}: {response.text[:500]}")
    return response.json() if response.content else {}


def seed_tenant(http: httpx.Client, tenant_id: str, partners: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Create the sample data of `tenant_id` through its API (`http` carries base URL and admin
    token). `partners` are the other demo tenants as (id, name). Returns counts by kind."""
    catalogue = catalogue_of(tenant_id)
    counts = {"warehouses": 0, "items": 0, "customers": 0, "suppliers": 0, "sales_orders": 0, "purchase_orders": 0}

    warehouses: dict[str, int] = {}
    for code, name in catalogue.warehouses:
        warehouses[code] = _ok(http.post("/api/v1/warehouses", json={"code": code, "name": name}),
                               f"warehouse {code}")["id"]
        counts["warehouses"] += 1

    items: list[tuple[int, ItemSeed]] = []
    for seed in catalogue.items:
        item = _ok(http.post("/api/v1/items", json={
            "sku": seed.sku, "name": seed.name, "unit": seed.unit, "list_price": seed.list_price,
            "cost": seed.cost, "reorder_point": seed.reorder_point,
        }), f"item {seed.sku}")
        items.append((item["id"], seed))
        counts["items"] += 1
        for warehouse_code, quantity in seed.stock:
            _ok(http.post("/api/v1/stock/adjustments", json={
                "item_id": item["id"], "warehouse_id": warehouses[warehouse_code],
                "quantity": quantity, "note": "opening stock (ygg demo)",
            }), f"opening stock of {seed.sku}")

    def party(kind: str, code: str, name: str, partner: str | None = None) -> int:
        body = {"code": code, "name": name, "currency": "EUR"}
        if partner:
            body["partner_tenant_id"] = partner
        counts[kind] += 1
        return _ok(http.post(f"/api/v1/{kind}", json=body), f"{kind[:-1]} {code}")["id"]

    customers = [party("customers", code, name) for code, name in catalogue.customers]
    suppliers = [party("suppliers", code, name) for code, name in catalogue.suppliers]
    # Every other demo tenant is both a customer and a supplier, linked for federation.
    for partner_id, partner_name in partners:
        party("customers", partner_id.upper(), partner_name, partner_id)
        party("suppliers", partner_id.upper(), partner_name, partner_id)

    first_warehouse = next(iter(warehouses.values()))

    def lines(offset: int, count: int, quantity: str) -> list[dict[str, Any]]:
        chosen = [items[(offset + i) % len(items)] for i in range(min(count, len(items)))]
        return [{"item_id": item_id, "quantity": quantity, "unit_price": seed.list_price} for item_id, seed in chosen]

    # Sales orders to local customers, one in each state. Partner tenants get none here: once
    # federation runs, their orders are what the demo shows flowing between tenants.
    for n, steps in enumerate([(), ("confirm",), ("confirm", "ship"), ("cancel",), ("confirm",)]):
        order = _ok(http.post("/api/v1/sales-orders", json={
            "customer_id": customers[n % len(customers)], "warehouse_id": first_warehouse,
            "currency": "EUR", "lines": lines(n, 3 if n % 2 == 0 else 2, str(1 + n)),
        }), "sales order")
        for step in steps:
            _ok(http.post(f"/api/v1/sales-orders/{order['id']}/{step}"), f"{step} sales order {order['id']}")
        counts["sales_orders"] += 1

    for n, steps in enumerate([(), ("confirm",), ("confirm", "receive"), ("cancel",)]):
        order = _ok(http.post("/api/v1/purchase-orders", json={
            "supplier_id": suppliers[n % len(suppliers)], "warehouse_id": first_warehouse,
            "currency": "EUR",
            "lines": [{**line, "unit_price": _cost(items, line["item_id"])}
                      for line in lines(n + 1, 2, str(5 * (n + 1)))],
        }), "purchase order")
        for step in steps:
            _ok(http.post(f"/api/v1/purchase-orders/{order['id']}/{step}"), f"{step} purchase order {order['id']}")
        counts["purchase_orders"] += 1
    return counts


def _cost(items: list[tuple[int, ItemSeed]], item_id: int) -> str:
    for candidate, seed in items:
        if candidate == item_id:
            return str(Decimal(seed.cost))
    raise KeyError(item_id)


# Sample trade between two demo tenants: one order left as a draft, one confirmed, one shipped,
# so the buyer's purchase orders show each of the seller's states.
TRADE_ORDER_STEPS: tuple[tuple[str, ...], ...] = ((), ("confirm",), ("confirm", "ship"))


def _trade_references(
    http: httpx.Client, parties: str, partner: str, skus: Sequence[str],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """What an order with `partner` needs: our active customer or supplier (`parties`) linked to
    it, our items by SKU (all of `skus` must exist) and a warehouse. Raises SeedError."""
    rows = _ok(http.get(f"/api/v1/{parties}", params={"limit": 500}), parties)["items"]
    party = next((r for r in rows if r.get("partner_tenant_id") == partner and r.get("active", True)), None)
    if party is None:
        raise SeedError(f"no {parties[:-1]} is linked to partner tenant {partner!r}")
    items = {i["sku"]: i for i in _ok(http.get("/api/v1/items", params={"limit": 500}), "items")["items"]}
    missing = [sku for sku in skus if sku not in items]
    if missing:
        raise SeedError(f"no item with SKU {', '.join(missing)}")
    warehouse = _ok(http.get("/api/v1/warehouses", params={"limit": 1}), "warehouses")["items"][0]
    return party, items, warehouse


def seed_trade_orders(http: httpx.Client, buyer: str, skus: Sequence[str]) -> int:
    """Sales orders from the seller (`http`) to its customer linked to tenant `buyer`, for the
    items `skus`, through the API: each change becomes an outbox event for the buyer. Returns
    how many orders were created."""
    customer, items, warehouse = _trade_references(http, "customers", buyer, skus)
    for n, steps in enumerate(TRADE_ORDER_STEPS):
        order = _ok(http.post("/api/v1/sales-orders", json={
            "customer_id": customer["id"], "warehouse_id": warehouse["id"], "currency": "EUR",
            "reference": f"demo trade with {buyer}",
            "lines": [{"item_id": items[sku]["id"], "quantity": str(1 + n + i), "unit_price": items[sku]["list_price"]}
                      for i, sku in enumerate(skus)],
        }), f"sales order to {buyer}")
        for step in steps:
            _ok(http.post(f"/api/v1/sales-orders/{order['id']}/{step}"), f"{step} sales order {order['id']}")
    return len(TRADE_ORDER_STEPS)


def seed_trade_purchase_order(http: httpx.Client, seller: str, skus: Sequence[str]) -> dict[str, Any]:
    """A purchase order from the buyer (`http`) to its supplier linked to tenant `seller`, for
    the buyer's items `skus`: it becomes a sales order at the seller."""
    supplier, items, warehouse = _trade_references(http, "suppliers", seller, skus)
    return _ok(http.post("/api/v1/purchase-orders", json={
        "supplier_id": supplier["id"], "warehouse_id": warehouse["id"], "currency": "EUR",
        "reference": f"demo purchase from {seller}",
        "lines": [{"item_id": items[sku]["id"], "quantity": str(2 + i), "unit_price": items[sku]["cost"]}
                  for i, sku in enumerate(skus)],
    }), f"purchase order to {seller}")


# -- the coordination plane: mesh registry and portal ----------------------------------------

# What the demo's partnerships cover, and how documents from a partner are taken: at once, as
# the demo's local partner rows had it before the mesh existed.
PARTNERSHIP_MODULES = ("sales", "purchasing", "b2b")
PARTNERSHIP_POLICY = "auto"
# The organizations' trial subscription: business allows 50 seats, room to invite people.
PORTAL_PLAN = "business"
SAMPLE_TICKET = (
    "Welcome to the Yggdrasil demo",
    "A sample support ticket, opened by `ygg demo` when it created this organization. "
    "Comment on it, assign it to an admin or close it.",
)


@dataclass(frozen=True)
class RegistryTenant:
    """A demo tenant as the mesh registry knows it."""

    id: str
    name: str
    api_url: str
    public_key: str
    broker_credentials_ref: str = ""


async def register_in_mesh(conn: AsyncConnection, tenants: Sequence[RegistryTenant]) -> list[str]:
    """Register each tenant in the mesh registry, or bring its entry up to date (the demo's
    ports and keys can change between runs), and give every pair an active partnership.

    What someone changed on purpose stays: a tenant's status (suspended, departed), and any
    partnership a pair already has, whatever its status or policy. Returns what it did, one
    line each, for the log."""
    from yggdrasil.mesh.adapters import registry
    from yggdrasil.mesh.errors import MeshError, NotFound

    done: list[str] = []
    for tenant in tenants:
        wanted = {"name": tenant.name, "api_url": tenant.api_url, "public_key": tenant.public_key,
                  "broker_credentials_ref": tenant.broker_credentials_ref}
        try:
            current = await registry.get_tenant(conn, tenant.id)
        except NotFound:
            await registry.register_tenant(conn, tenant_id=tenant.id, **wanted)
            done.append(f"registered tenant {tenant.id} at {tenant.api_url}")
            continue
        changes = {field: value for field, value in wanted.items() if current[field] != value}
        if not changes:
            continue
        if current["status"] == "departed":
            log.warning("%s departed from the mesh; its registry entry is left as it is", tenant.id)
            continue
        await registry.update_tenant(conn, tenant.id, **changes)
        done.append(f"updated tenant {tenant.id}: {', '.join(sorted(changes))}")

    ids = sorted(t.id for t in tenants)
    for low, high in itertools.combinations(ids, 2):
        existing = [p for p in await registry.list_partnerships(conn, tenant_id=low, limit=1000)
                    if {p["tenant_low"], p["tenant_high"]} == {low, high}]
        if existing:
            continue
        try:
            proposal = await registry.propose_partnership(
                conn, proposed_by=low, partner=high, modules=list(PARTNERSHIP_MODULES),
                approval_policy=PARTNERSHIP_POLICY)
            await registry.act_on_partnership(conn, proposal["id"], "accept", by=high)
        except MeshError as exc:  # e.g. one of them is suspended at the mesh
            log.warning("no partnership between %s and %s: %s", low, high, exc.message)
            continue
        done.append(f"partnership {proposal['id']} {low} <-> {high} active (approval {PARTNERSHIP_POLICY})")
    return done


@dataclass(frozen=True)
class PortalOwner:
    """The portal login the demo makes for a tenant's organization."""

    tenant_id: str
    organization: str  # slug
    email: str
    password: str


def owner_email(tenant_id: str) -> str:
    return f"owner@{tenant_id}.example"


async def seed_portal_organization(conn: AsyncConnection, passwords: Passwords, tenant_id: str, tenant_name: str,
                                   owner: PortalOwner, sample_ticket: bool = True) -> list[str]:
    """For one demo tenant: its organization (slug = tenant id, trial subscription) owning the
    tenant's registry entry, `owner` as the organization's owner who signs in with
    `owner.password`, and (with `sample_ticket`) a support ticket if the organization has none.

    A tenant already owned by another organization stays there. The owner's password is set
    back to `owner.password` if it no longer matches, so the logins `ygg demo` prints always
    work. `conn`: autocommit with dict rows (yggdrasil.portal.adapters.connect). Returns what
    it did, one line each, for the log."""
    from yggdrasil.portal import services
    from yggdrasil.portal.adapters import accounts as account_rows
    from yggdrasil.portal.adapters import organizations as org_rows
    from yggdrasil.portal.adapters import tickets as ticket_rows
    from yggdrasil.portal.domain.accounts import email_key

    done: list[str] = []
    slug = owner.organization
    org = await org_rows.organization_by_slug(conn, slug)
    if org is None:
        org = await services.create_organization(conn, tenant_name, slug, plan=PORTAL_PLAN)
        done.append(f"organization {slug} with a {PORTAL_PLAN} trial subscription")

    cur = await conn.execute("SELECT organization_id FROM tenants WHERE id = %s", (tenant_id,))
    row = await cur.fetchone()
    if row is not None and row["organization_id"] is None:
        await services.attach_tenant(conn, slug, tenant_id)
        done.append(f"tenant {tenant_id} owned by organization {slug}")

    user = await account_rows.user_by_email(conn, email_key(owner.email))
    if user is None:
        user = await services.create_user(conn, passwords, owner.email, f"{tenant_name} owner", owner.password)
        done.append(f"user {owner.email}")
    else:
        matches, _ = await asyncio.to_thread(passwords.verify, user["password_hash"], owner.password)
        if not matches:
            new_hash = await asyncio.to_thread(passwords.hash, owner.password)
            async with conn.transaction():
                await account_rows.set_password_hash(conn, user["id"], new_hash)
                await org_rows.record_event(conn, None, user["id"], "user.password_changed", by="ygg demo")
            done.append(f"password of {owner.email} set back to the demo's")
    if await org_rows.member(conn, org["id"], user["id"]) is None:
        await services.add_member_as_operator(conn, slug, user["id"], "owner")
        done.append(f"{owner.email} owner of {slug}")

    if sample_ticket and not await ticket_rows.tickets(conn, org["id"], None, 0, 1):
        actor = services.Actor(user["id"], user["email"], user["display_name"])
        ticket = await services.open_ticket(conn, actor, slug, *SAMPLE_TICKET)
        done.append(f"sample ticket {ticket['id']} in {slug}")
    return done
