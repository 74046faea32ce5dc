"""The federation over HTTP, against a real database: the partner registry and SKU mappings, the
outbox, inbox, held and quarantine views, approvals and the receipts they send, each order's
`federation` status, and the backlog in /health and /metrics.

We are ACME (tenant "acme", the `api` fixture). BRAVO-BUYER ("bravo") is a partner tenant with
its own key: its events to us go through the relay's real checks (`apply_inbound_batch`), its
receipts to us through `apply_receipt`, as the sidecar would apply them.
"""

import asyncio
import base64
import json
from dataclasses import dataclass
from uuid import uuid4

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yggdrasil.broker.subjects import event_subject
from yggdrasil.events.catalogue import payload_state_hash
from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import encode_public_key, generate_keypair, sign_envelope
from yggdrasil.federation.keys import load_signing_key
from yggdrasil.federation.receipts import RECEIPT_AGGREGATE, apply_receipt
from yggdrasil.federation.relay import InboundMessage, RelayContext, apply_inbound_batch

from conftest import make_settings, open_api

pytestmark = pytest.mark.integration

US, BRAVO = "acme", "bravo"
BRAVO_SKU = "BRAVO-CLOCK-7"


@dataclass
class Bravo:
    key: Ed25519PrivateKey

    @property
    def public_key(self) -> str:
        return encode_public_key(self.key.public_key())


@dataclass
class Shop:
    bravo: Bravo
    customer: int        # BRAVO-BUYER as our customer (partner tenant "bravo")
    local_customer: int  # a walk-in customer: no federation
    warehouse: int
    clock: int


def one(dsn: str, query: str, *params):
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


@pytest.fixture
async def shop(api) -> Shop:
    bravo = Bravo(generate_keypair()[0])
    created = await api.post("/api/v1/partners", json={"tenant_id": BRAVO, "name": "BRAVO-BUYER",
                                                        "public_key": bravo.public_key})
    assert created.status_code == 201, created.text
    with psycopg.connect(api.dsn) as conn:
        def insert(query, *params):
            return conn.execute(query, params).fetchone()[0]

        customer = insert("INSERT INTO customers (code, name, partner_tenant_id) VALUES ('BRAVO', 'BRAVO-BUYER', %s) "
                          "RETURNING id", BRAVO)
        local = insert("INSERT INTO customers (code, name) VALUES ('WALKIN', 'Walk-in') RETURNING id")
        warehouse = insert("INSERT INTO warehouses (code, name) VALUES ('MAIN', 'Main') RETURNING id")
        clock = insert("INSERT INTO items (sku, name, list_price) VALUES ('RETRO-CLOCK', 'Retro clock', 24.90) "
                       "RETURNING id")
    return Shop(bravo, customer, local, warehouse, clock)


async def sell(api, shop: Shop, customer: int | None = None) -> dict:
    r = await api.post("/api/v1/sales-orders", role="sales", json={
        "customer_id": customer or shop.customer, "warehouse_id": shop.warehouse,
        "lines": [{"item_id": shop.clock, "quantity": "2"}]})
    assert r.status_code == 201, r.text
    return r.json()


async def bravo_sends(api, signing_key_file, bravo: Bravo, *envelopes: Envelope, raw: bytes | None = None):
    """Deliver BRAVO's events to us through the relay's checks, as the sidecar would."""
    messages = [InboundMessage(event_subject(e.module, US, BRAVO), sign_envelope(e, bravo.key).encode())
                for e in envelopes]
    if raw is not None:
        messages.append(InboundMessage(event_subject("sales", US, BRAVO), raw))
    async with await psycopg.AsyncConnection.connect(api.dsn) as conn:
        async with conn.transaction():
            return await apply_inbound_batch(conn, messages, RelayContext(US, load_signing_key(signing_key_file)))


def bravo_order(order_id: str, sequence: int = 1, verb: str = "created", state: str = "draft",
                sku: str = BRAVO_SKU) -> Envelope:
    payload = {"order_id": order_id, "currency": "EUR", "state": state,
               "lines": [{"line_no": 1, "sku": sku, "description": "Clock", "quantity": "4", "unit_price": "19.90"}]}
    return Envelope.create(type=f"sales.order.{verb}", source=BRAVO, destination=US, aggregate_id=order_id,
                           sequence=sequence, payload=payload, state_hash=payload_state_hash(payload))


async def bravo_answers(api, event_id: str, outcome: str, reason: str | None = None, sequence: int = 1) -> None:
    """BRAVO's receipt for one of our events, applied as the sidecar applies a verified one."""
    receipt = Envelope.create(type="b2b.receipt", source=BRAVO, destination=US, aggregate_type=RECEIPT_AGGREGATE,
                              aggregate_id=event_id, sequence=sequence,
                              payload={"event_id": event_id, "outcome": outcome, "reason": reason})
    async with await psycopg.AsyncConnection.connect(api.dsn) as conn:
        assert await apply_receipt(conn, receipt) == "applied"
        await conn.commit()


async def eventually(check, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.05)


def receipts_sent(dsn: str) -> list[tuple[str, dict]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT dest_tenant, envelope FROM b2b_events WHERE event_type = 'b2b.receipt' "
                            "ORDER BY id").fetchall()
    return [(dest, json.loads(bytes(raw))["payload"]) for dest, raw in rows]


# -- the partner registry ---------------------------------------------------------------------

async def test_an_admin_registers_a_partner_and_a_bad_key_or_a_second_registration_is_refused(api):
    key = encode_public_key(generate_keypair()[1])
    created = await api.post("/api/v1/partners", json={"tenant_id": "charlie", "public_key": key})
    assert created.status_code == 201, created.text
    partner = created.json()
    assert (partner["tenant_id"], partner["name"], partner["approval_policy"], partner["status"]) == \
        ("charlie", "charlie", "approve", "active"), "approval is the default policy"
    assert partner["public_key"] == key and len(partner["key_id"]) == 16

    for bad_key in ("not base64!", base64.b64encode(b"too short").decode(), key[:-4] + "====", ""):
        refused = await api.post("/api/v1/partners", json={"tenant_id": "delta", "public_key": bad_key})
        assert refused.status_code == 422, bad_key
        assert "public_key" in refused.json()["error"]["message"]

    again = await api.post("/api/v1/partners", json={"tenant_id": "charlie", "public_key": key,
                                                      "approval_policy": "auto"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "partner.exists"
    assert (await api.get("/api/v1/partners/charlie")).json()["approval_policy"] == "approve", "nothing replaced"

    itself = await api.post("/api/v1/partners", json={"tenant_id": US, "public_key": key})
    assert itself.status_code == 422 and itself.json()["error"]["code"] == "partner.is_self"

    for role in ("sales", "purchasing", "auditor", "warehouse"):
        assert (await api.post("/api/v1/partners", role=role,
                               json={"tenant_id": "echo", "public_key": key})).status_code == 403
    assert (await api.get("/api/v1/partners/nobody")).status_code == 404
    assert (await api.get("/api/v1/partners", role="warehouse")).status_code == 403
    assert (await api.get("/api/v1/partners", role="auditor")).status_code == 200


async def test_patching_a_partner_changes_only_what_is_sent_and_a_new_key_keeps_it_suspended(api):
    old_key, new_key = (encode_public_key(generate_keypair()[1]) for _ in range(2))
    await api.post("/api/v1/partners", json={"tenant_id": "charlie", "name": "Charlie", "public_key": old_key})
    suspended = await api.patch("/api/v1/partners/charlie", json={"status": "suspended", "approval_policy": "auto"})
    assert suspended.status_code == 200, suspended.text
    assert (suspended.json()["status"], suspended.json()["approval_policy"]) == ("suspended", "auto")

    rotated = (await api.patch("/api/v1/partners/charlie", json={"public_key": new_key})).json()
    assert (rotated["public_key"], rotated["status"], rotated["name"]) == (new_key, "suspended", "Charlie")
    assert rotated["key_id"] != suspended.json()["key_id"]

    assert (await api.patch("/api/v1/partners/charlie", json={"status": None})).status_code == 422
    assert (await api.patch("/api/v1/partners/charlie", json={"public_key": "AAAA"})).status_code == 422
    assert (await api.patch("/api/v1/partners/nobody", json={"status": "active"})).status_code == 404
    assert (await api.patch("/api/v1/partners/charlie", role="purchasing", json={"status": "active"})).status_code == 403
    with psycopg.connect(api.dsn) as conn:
        actors = conn.execute("SELECT DISTINCT actor FROM audit_change_log WHERE table_name = 'b2b_partners'").fetchall()
    assert actors == [("admin-user",)], "registry changes are audited with the person who made them"


async def test_partners_list_by_status_in_pages(api):
    for n, tenant in enumerate(("charlie", "delta", "echo")):
        await api.post("/api/v1/partners", json={"tenant_id": tenant, "public_key": encode_public_key(generate_keypair()[1])})
    await api.patch("/api/v1/partners/delta", json={"status": "suspended"})
    first = (await api.get("/api/v1/partners?limit=2")).json()
    second = (await api.get(f"/api/v1/partners?limit=2&after={first['next_after']}")).json()
    assert [p["tenant_id"] for p in first["items"] + second["items"]] == ["charlie", "delta", "echo"]
    assert second["next_after"] is None
    active = (await api.get("/api/v1/partners?status=active")).json()["items"]
    assert [p["tenant_id"] for p in active] == ["charlie", "echo"]
    assert (await api.get("/api/v1/partners?status=gone")).status_code == 422


async def test_partner_skus_map_to_our_items(api, shop):
    url = f"/api/v1/partners/{BRAVO}/items"
    mapped = await api.post(url, role="purchasing", json={"partner_sku": BRAVO_SKU, "item_id": shop.clock})
    assert mapped.status_code == 201, mapped.text
    assert (mapped.json()["partner_sku"], mapped.json()["item_id"], mapped.json()["item_sku"]) == \
        (BRAVO_SKU, shop.clock, "RETRO-CLOCK")
    await api.post(url, role="purchasing", json={"partner_sku": "BRAVO-LAMP", "item_id": shop.clock})

    listed = (await api.get(url, role="auditor")).json()
    assert [m["partner_sku"] for m in listed["items"]] == [BRAVO_SKU, "BRAVO-LAMP"]
    assert [m["partner_sku"] for m in (await api.get(f"{url}?partner_sku=BRAVO-LAMP")).json()["items"]] == ["BRAVO-LAMP"]

    unknown_item = await api.post(url, role="purchasing", json={"partner_sku": "X", "item_id": 999999})
    assert unknown_item.status_code == 422 and unknown_item.json()["error"]["code"] == "resource.reference_unknown"
    assert (await api.post("/api/v1/partners/nobody/items", json={"partner_sku": "X", "item_id": shop.clock})).status_code == 404
    assert (await api.get("/api/v1/partners/nobody/items")).status_code == 404
    assert (await api.post(url, role="warehouse", json={"partner_sku": "X", "item_id": shop.clock})).status_code == 403

    assert (await api.delete(f"{url}/{mapped.json()['id']}", role="purchasing")).status_code == 204
    assert (await api.delete(f"{url}/{mapped.json()['id']}", role="purchasing")).status_code == 404
    assert [m["partner_sku"] for m in (await api.get(url)).json()["items"]] == ["BRAVO-LAMP"]


# -- the outbox and each order's federation status -------------------------------------------

async def test_the_outbox_lists_our_events_with_filters_pages_and_the_envelope_on_request(api, shop):
    first, second = await sell(api, shop), await sell(api, shop)
    assert (await api.post(f"/api/v1/sales-orders/{first['id']}/confirm", role="sales")).status_code == 200
    await sell(api, shop, customer=shop.local_customer)  # no event

    page = (await api.get("/api/v1/b2b/events?limit=2", role="auditor")).json()
    rest = (await api.get(f"/api/v1/b2b/events?limit=2&after={page['next_after']}", role="auditor")).json()
    events = page["items"] + rest["items"]
    assert [(e["event_type"], e["aggregate_id"], e["sequence"], e["status"], e["dest_tenant"]) for e in events] == [
        ("sales.order.created", str(first["id"]), 1, "pending", BRAVO),
        ("sales.order.created", str(second["id"]), 1, "pending", BRAVO),
        ("sales.order.confirmed", str(first["id"]), 2, "pending", BRAVO),
    ]
    assert rest["next_after"] is None
    assert all(e["envelope"] is None and e["attempts"] == 0 for e in events), "no envelope unless asked"

    filtered = (await api.get(f"/api/v1/b2b/events?aggregate_id={first['id']}&event_type=sales.order.confirmed"
                              "&include_envelope=true", role="sales")).json()["items"]
    assert len(filtered) == 1
    envelope = filtered[0]["envelope"]
    assert (envelope["source"], envelope["destination"], envelope["sequence"]) == (US, BRAVO, 2)
    assert envelope["payload"]["state"] == "confirmed" and envelope["signature"]
    assert (await api.get("/api/v1/b2b/events?status=acknowledged")).json()["items"] == []
    assert (await api.get("/api/v1/b2b/events?status=lost")).status_code == 422

    one = await api.get(f"/api/v1/b2b/events/{events[0]['event_id']}", role="purchasing")
    assert one.status_code == 200 and one.json()["id"] == events[0]["id"]
    assert (await api.get(f"/api/v1/b2b/events/{uuid4()}")).status_code == 404
    assert (await api.get("/api/v1/b2b/events/not-a-uuid")).status_code == 422
    assert (await api.get("/api/v1/b2b/events", role="warehouse")).status_code == 403


async def test_a_sales_order_shows_what_the_partner_did_with_it(api, shop):
    order = await sell(api, shop)
    federation = order["federation"]
    assert (federation["partner"], federation["direction"], federation["state"], federation["last_event_type"],
            federation["last_sequence"], federation["outbox_status"], federation["receipt_outcome"]) == \
        (BRAVO, "outbound", "pending", "sales.order.created", 1, "pending", None)
    local = await sell(api, shop, customer=shop.local_customer)
    assert local["federation"] is None, "a customer that is not a partner tenant: nothing to show"

    url = f"/api/v1/sales-orders/{order['id']}"
    assert (await api.get(url)).json()["federation"]["state"] == "pending"  # now cached
    await bravo_answers(api, federation["last_event_id"], "awaiting_approval")

    # The sidecar's write notifies the server, which drops its cached copy of the order.
    async def state_is(expected):
        return (await api.get(url)).json()["federation"]["state"] == expected

    assert await eventually(lambda: state_is("awaiting_approval"))
    await bravo_answers(api, federation["last_event_id"], "rejected", "we no longer stock clocks", sequence=2)
    assert await eventually(lambda: state_is("rejected"))
    shown = (await api.get(url)).json()["federation"]
    assert (shown["outbox_status"], shown["receipt_outcome"], shown["receipt_reason"]) == \
        ("rejected", "rejected", "we no longer stock clocks")

    listed = {o["id"]: o["federation"] for o in (await api.get("/api/v1/sales-orders")).json()["items"]}
    assert listed[order["id"]]["receipt_outcome"] == "rejected" and listed[local["id"]] is None
    rejected = (await api.get("/api/v1/b2b/events?receipt_outcome=rejected")).json()["items"]
    assert [e["aggregate_id"] for e in rejected] == [str(order["id"])]

    confirmed = (await api.post(f"{url}/confirm", role="sales")).json()["federation"]
    assert (confirmed["state"], confirmed["last_event_type"], confirmed["last_sequence"]) == \
        ("pending", "sales.order.confirmed", 2), "the latest change has no answer yet"


# -- inbound: approvals, inbox, held, quarantine ---------------------------------------------

async def test_approving_a_waiting_order_creates_the_purchase_order_and_answers_accepted(api, shop, signing_key_file):
    await api.post(f"/api/v1/partners/{BRAVO}/items", json={"partner_sku": BRAVO_SKU, "item_id": shop.clock})
    created = bravo_order("SO-77")
    [disposition] = await bravo_sends(api, signing_key_file, shop.bravo, created)
    assert disposition.outcome == "awaiting_approval"

    waiting = (await api.get("/api/v1/approvals?state=pending", role="purchasing")).json()["items"]
    assert len(waiting) == 1
    approval = waiting[0]
    assert (approval["source_tenant"], approval["aggregate_id"], approval["waiting_reason"], approval["state"],
            approval["purchase_order_id"]) == (BRAVO, "SO-77", "partner.approval_required", "pending", None)
    assert approval["payload"]["lines"][0]["sku"] == BRAVO_SKU
    assert (await api.get(f"/api/v1/approvals/{approval['id']}", role="auditor")).json() == approval
    assert (await api.get("/api/v1/approvals", role="warehouse")).status_code == 403

    url = f"/api/v1/approvals/{approval['id']}"
    for role in ("auditor", "warehouse"):
        assert (await api.post(f"{url}/approve", role=role)).status_code == 403, role
    # Sales decides documents that would become sales orders; this one becomes a purchase order.
    refused = await api.post(f"{url}/approve", role="sales")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "approval.forbidden"
    assert "needs one of: admin, purchasing" in refused.json()["error"]["message"]

    approved = await api.post(f"{url}/approve", role="purchasing", json={"reason": "expected, per call"})
    assert approved.status_code == 200, approved.text
    decided = approved.json()
    assert (decided["state"], decided["decided_by"], decided["reason"]) == ("approved", "purchasing-user",
                                                                            "expected, per call")
    assert decided["purchase_order_id"]
    assert receipts_sent(api.dsn)[-1] == (BRAVO, {"event_id": str(created.event_id), "outcome": "accepted",
                                                  "reason": "expected, per call"})
    receipt_rows = (await api.get("/api/v1/b2b/events?event_type=b2b.receipt")).json()["items"]
    assert receipt_rows[-1]["aggregate_id"] == str(created.event_id) and receipt_rows[-1]["status"] == "pending"

    again = await api.post(f"{url}/approve", role="purchasing")
    assert again.status_code == 409 and again.json()["error"]["code"] == "approval.already_decided"
    assert "already approved" in again.json()["error"]["message"]
    assert (await api.post(f"{url}/reject", role="purchasing", json={"reason": "changed my mind"})).status_code == 409
    assert (await api.post("/api/v1/approvals/999999/approve", role="purchasing")).status_code == 404

    order = (await api.get(f"/api/v1/purchase-orders/{decided['purchase_order_id']}")).json()
    assert (order["b2b_source_tenant"], order["b2b_source_order_id"]) == (BRAVO, "SO-77")
    federation = order["federation"]
    assert (federation["partner"], federation["direction"], federation["state"], federation["partner_state"],
            federation["held_events"], federation["awaiting_approval"]) == (BRAVO, "inbound", "applied", "draft", 0, False)

    inbox = (await api.get(f"/api/v1/b2b/inbox?source_tenant={BRAVO}", role="auditor")).json()["items"]
    assert [(e["event_id"], e["outcome"]) for e in inbox] == [(str(created.event_id), "awaiting_approval")]


async def test_rejecting_needs_a_reason_and_sends_it_to_the_partner(api, shop, signing_key_file):
    created = bravo_order("SO-78")
    await bravo_sends(api, signing_key_file, shop.bravo, created)
    [approval] = (await api.get("/api/v1/approvals")).json()["items"]
    url = f"/api/v1/approvals/{approval['id']}/reject"
    for body in (None, {}, {"reason": ""}, {"reason": "   "}):
        assert (await api.post(url, role="purchasing", json=body)).status_code == 422, body

    rejected = await api.post(url, role="purchasing", json={"reason": "we did not order this"})
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["state"], rejected.json()["reason"], rejected.json()["purchase_order_id"]) == \
        ("rejected", "we did not order this", None)
    assert receipts_sent(api.dsn)[-1] == (BRAVO, {"event_id": str(created.event_id), "outcome": "rejected",
                                                  "reason": "we did not order this"})
    assert (await api.get("/api/v1/purchase-orders")).json()["items"] == []
    assert (await api.post(f"/api/v1/approvals/{approval['id']}/approve", role="purchasing")).status_code == 409
    assert [a["id"] for a in (await api.get("/api/v1/approvals?state=rejected")).json()["items"]] == [approval["id"]]
    assert (await api.get("/api/v1/approvals?state=pending")).json()["items"] == []


async def test_an_order_with_an_unmapped_sku_is_approved_once_the_sku_is_mapped(api, shop, signing_key_file):
    await api.patch(f"/api/v1/partners/{BRAVO}", json={"approval_policy": "auto"})
    await bravo_sends(api, signing_key_file, shop.bravo, bravo_order("SO-79", sku="NEW-GADGET"))
    [approval] = (await api.get("/api/v1/approvals")).json()["items"]
    assert approval["waiting_reason"] == "items.unmapped"

    blocked = await api.post(f"/api/v1/approvals/{approval['id']}/approve", role="purchasing")
    assert blocked.status_code == 409 and blocked.json()["error"]["code"] == "approval.blocked"
    assert "NEW-GADGET" in blocked.json()["error"]["message"]
    assert (await api.get(f"/api/v1/approvals/{approval['id']}")).json()["state"] == "pending"
    assert receipts_sent(api.dsn)[-1][1]["outcome"] == "awaiting_approval", "no decision was sent"

    await api.post(f"/api/v1/partners/{BRAVO}/items", role="purchasing",
                   json={"partner_sku": "NEW-GADGET", "item_id": shop.clock})
    approved = await api.post(f"/api/v1/approvals/{approval['id']}/approve", role="purchasing")
    assert approved.status_code == 200, approved.text
    assert approved.json()["purchase_order_id"]


async def test_a_decision_without_a_signing_key_is_refused_since_the_partner_could_not_be_told(tenant_dsn):
    with psycopg.connect(tenant_dsn) as conn:
        approval_id = conn.execute(
            "INSERT INTO b2b_approvals (source_tenant, event_id, event_type, aggregate_type, aggregate_id, sequence, "
            "payload, waiting_reason) VALUES (%s, %s, 'sales.order.created', 'sales_order', 'SO-90', 1, '{}', "
            "'partner.approval_required') RETURNING id", (BRAVO, uuid4())).fetchone()[0]
    async with open_api(make_settings(tenant_dsn)) as api:
        refused = await api.post(f"/api/v1/approvals/{approval_id}/reject", role="purchasing",
                                 json={"reason": "not ours"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "federation.not_configured"
        assert (await api.get(f"/api/v1/approvals/{approval_id}")).json()["state"] == "pending"


async def test_held_inbox_and_quarantine_show_what_came_in_and_why(api, shop, signing_key_file):
    await api.patch(f"/api/v1/partners/{BRAVO}", json={"approval_policy": "auto"})
    await api.post(f"/api/v1/partners/{BRAVO}/items", json={"partner_sku": BRAVO_SKU, "item_id": shop.clock})
    shipped = bravo_order("SO-80", sequence=3, verb="shipped", state="shipped")
    forged = sign_envelope(bravo_order("SO-81"), generate_keypair()[0]).encode()
    binary = b"\xff\xfe" + bytes(range(256)) * 40  # not UTF-8, larger than a list shows
    dispositions = await bravo_sends(api, signing_key_file, shop.bravo, shipped, raw=forged)
    assert [d.outcome for d in dispositions] == ["held", "quarantined"]
    async with await psycopg.AsyncConnection.connect(api.dsn) as conn:
        async with conn.transaction():
            await apply_inbound_batch(conn, [InboundMessage(event_subject("sales", US, BRAVO), binary)],
                                      RelayContext(US, load_signing_key(signing_key_file)))

    [held] = (await api.get("/api/v1/b2b/held", role="purchasing")).json()["items"]
    assert (held["aggregate_id"], held["sequence"], held["last_applied_sequence"], held["event_id"]) == \
        ("SO-80", 3, 0, str(shipped.event_id))
    assert (await api.get("/api/v1/b2b/held?aggregate_id=SO-99")).json()["items"] == []

    quarantined = (await api.get(f"/api/v1/b2b/quarantine?source_tenant={BRAVO}", role="auditor")).json()["items"]
    assert [q["reason"] for q in quarantined] == ["signature.invalid", "envelope.malformed"]
    signature, malformed = quarantined
    assert (signature["raw_encoding"], signature["raw_truncated"]) == ("utf-8", False)
    assert signature["raw"].encode() == forged and signature["size"] == len(forged)
    assert (malformed["raw_encoding"], malformed["raw_truncated"], malformed["size"]) == ("base64", True, len(binary))
    assert base64.b64decode(malformed["raw"]) == binary[:4096]
    whole = (await api.get(f"/api/v1/b2b/quarantine/{malformed['id']}")).json()
    assert base64.b64decode(whole["raw"]) == binary and not whole["raw_truncated"]
    assert [q["id"] for q in (await api.get("/api/v1/b2b/quarantine?reason=signature.invalid")).json()["items"]] == \
        [signature["id"]]
    assert (await api.get("/api/v1/b2b/quarantine/999999")).status_code == 404

    # The gap fills: the held event is applied, and the inbox shows all three, in one page each.
    await bravo_sends(api, signing_key_file, shop.bravo, bravo_order("SO-80", 1),
                      bravo_order("SO-80", 2, "confirmed", "confirmed"))
    assert (await api.get("/api/v1/b2b/held")).json()["items"] == []
    pages, after = [], 0
    while after is not None:
        page = (await api.get(f"/api/v1/b2b/inbox?limit=1&after={after}&aggregate_id=SO-80")).json()
        pages.append(page["items"])
        after = page["next_after"]
    assert [(p[0]["sequence"], p[0]["outcome"]) for p in pages if p] == [(3, "applied"), (1, "applied"), (2, "applied")]
    assert (await api.get("/api/v1/b2b/inbox?outcome=held")).json()["items"] == []
    [order] = (await api.get("/api/v1/purchase-orders")).json()["items"]
    assert (order["federation"]["state"], order["federation"]["partner_state"],
            order["federation"]["inbound_sequence"]) == ("applied", "shipped", 3)
    for path in ("inbox", "held", "quarantine"):
        assert (await api.get(f"/api/v1/b2b/{path}", role="warehouse")).status_code == 403


# -- operations -------------------------------------------------------------------------------

async def test_health_shows_the_outbox_backlog_and_stays_ok_while_events_wait(api, shop):
    health = (await api.http.get("/health")).json()
    assert health["status"] == "ok"
    assert health["federation"] == {"outbox_pending": 0, "outbox_oldest_pending_seconds": None, "outbox_failing": 0,
                                    "outbox_stalled": False, "quarantined": 0, "approvals_waiting": 0,
                                    "awaiting_receipt": 0, "receipt_overdue": 0,
                                    # No mesh configured: the registry was never synced.
                                    "registry_synced_seconds_ago": None, "registry_sync_failures": 0}
    await sell(api, shop)
    await sell(api, shop)
    with psycopg.connect(api.dsn) as conn:
        # As if the broker had been unreachable for five minutes.
        conn.execute("UPDATE b2b_events SET created_at = now() - interval '5 minutes', attempts = 7, "
                     "last_error = 'nats: no servers available for connection' WHERE id = (SELECT min(id) FROM b2b_events)")
    health = (await api.http.get("/health")).json()
    assert health["status"] == "ok", "the tenant works while the broker is away"
    federation = health["federation"]
    assert (federation["outbox_pending"], federation["outbox_failing"], federation["outbox_stalled"]) == (2, 1, True)
    assert federation["outbox_oldest_pending_seconds"] >= 300
    assert "nats" not in json.dumps(health), "no error text without a token"

    metrics = (await api.http.get("/metrics")).text
    assert "ygg_outbox_pending_events 2.0" in metrics
    assert "ygg_outbox_failing_events 1.0" in metrics
    assert "ygg_b2b_approvals_waiting 0.0" in metrics
    oldest = next(line for line in metrics.splitlines() if line.startswith("ygg_outbox_oldest_pending_seconds "))
    assert float(oldest.split()[1]) >= 300

    with psycopg.connect(api.dsn) as conn:
        # One published and answered by nobody for too long: the sidecar is re-sending it.
        conn.execute("UPDATE b2b_events SET status = 'published', published_at = now(), "
                     "receipt_due_at = now() - interval '1 minute' WHERE id = (SELECT min(id) FROM b2b_events)")
    federation = (await api.http.get("/health")).json()["federation"]
    assert (federation["outbox_pending"], federation["awaiting_receipt"], federation["receipt_overdue"]) == (1, 1, 1)
    assert "ygg_outbox_receipt_overdue_events 1.0" in (await api.http.get("/metrics")).text


async def test_divergences_are_listed_until_someone_resolves_them_once(api):
    with psycopg.connect(api.dsn) as conn:
        divergence_id = conn.execute(
            """INSERT INTO b2b_divergences (source_tenant, aggregate_type, aggregate_id, event_id, event_type,
                                            sequence, order_table, order_id, expected_hash, actual_hash, detail)
               VALUES ('bravo', 'purchase_order', 'PO-9', gen_random_uuid(), 'purchasing.order.updated', 2,
                       'crm_sales_orders', 41, repeat('a', 64), repeat('b', 64), 'line 1 quantity 3 here, 5 there')
               RETURNING id""").fetchone()[0]
    [open_one] = (await api.get("/api/v1/b2b/divergences", role="auditor")).json()["items"]
    assert (open_one["id"], open_one["order_id"], open_one["resolved_at"]) == (divergence_id, 41, None)
    assert (await api.post(f"/api/v1/b2b/divergences/{divergence_id}/resolve", role="auditor")).status_code == 403

    resolved = await api.post(f"/api/v1/b2b/divergences/{divergence_id}/resolve", role="sales")
    assert resolved.status_code == 200 and resolved.json()["resolved_at"] is not None
    again = await api.post(f"/api/v1/b2b/divergences/{divergence_id}/resolve", role="sales")
    assert again.status_code == 409 and "already resolved" in again.json()["error"]["message"]
    assert (await api.get(f"/api/v1/b2b/divergences/{divergence_id + 1}/resolve")).status_code == 405

    assert (await api.get("/api/v1/b2b/divergences")).json()["items"] == []
    assert [d["id"] for d in (await api.get("/api/v1/b2b/divergences?resolved=true")).json()["items"]] == [divergence_id]
    trail = (await api.get(f"/api/v1/audit?table=b2b_divergences&record_id={divergence_id}", role="auditor")).json()
    assert [(r["operation"], r["actor"]) for r in trail["items"]] == [("INSERT", "system"), ("UPDATE", "sales-user")]
