"""Receipts: the destination answers every order event with what it recorded, and the source
marks its outbox row, so the seller sees per order what the buyer did with each change.

A receipt is itself an event (`b2b.receipt`), sent through the destination's outbox in the
transaction that recorded the outcome: it cannot be lost, and it cannot claim what was rolled
back. Its aggregate is the event it answers (`b2b_event` / event id), so the receipts of one
event are numbered 1, 2, 3 (held, then applied; awaiting approval, then accepted): the source
keeps the latest and ignores an older one that arrives late. Receipts are never answered.
"""

from __future__ import annotations

from typing import Literal

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yggdrasil.events.catalogue import ReceiptOutcome, ReceiptPayload
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES, Envelope
from yggdrasil.federation.errors import ApplyRefused
from yggdrasil.tenant.adapters.outbox import enqueue_event

RECEIPT_AGGREGATE = "b2b_event"

# `rejected` marks the row rejected; any other answer means the destination holds the event
# durably (applied, held, awaiting approval, accepted, or already had it): acknowledged.
_MARK = """
    UPDATE b2b_events
       SET status = CASE WHEN %(outcome)s::text = 'rejected' THEN 'rejected' ELSE 'acknowledged' END,
           acknowledged_at = now(), receipt_outcome = %(outcome)s::text, receipt_reason = %(reason)s,
           receipt_sequence = %(sequence)s
     WHERE event_id = %(event_id)s AND dest_tenant = %(from)s
       AND (receipt_sequence IS NULL OR receipt_sequence < %(sequence)s)
    RETURNING 1
"""

_EXISTS = "SELECT 1 FROM b2b_events WHERE event_id = %(event_id)s AND dest_tenant = %(from)s"


async def enqueue_receipt(
    conn: psycopg.AsyncConnection,
    *,
    signing_key: Ed25519PrivateKey,
    tenant_id: str,
    answering: Envelope,
    outcome: ReceiptOutcome,
    reason: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Envelope:
    """Queue our answer to `answering` (an event we received) in the caller's transaction."""
    payload = ReceiptPayload(event_id=answering.event_id, outcome=outcome,
                             reason=reason[:2000] if reason else None)
    return await enqueue_event(
        conn, signing_key=signing_key, source=tenant_id, destination=answering.source, type="b2b.receipt",
        aggregate_type=RECEIPT_AGGREGATE, aggregate_id=str(answering.event_id), payload=payload,
        state_hash=None, max_bytes=max_bytes,
    )


async def apply_receipt(conn: psycopg.AsyncConnection, envelope: Envelope) -> Literal["applied", "duplicate"]:
    """Record a verified receipt on the outbox row of the event it answers.

    Returns `duplicate` for a receipt older than the one already recorded. Raises
    ApplyRefused if we never sent that event to the receipt's sender: a receipt can only
    speak for its own tenant's inbox."""
    receipt = envelope.typed_payload()
    assert isinstance(receipt, ReceiptPayload)
    params = {"event_id": receipt.event_id, "from": envelope.source, "outcome": receipt.outcome,
              "reason": receipt.reason, "sequence": envelope.sequence}
    cur = await conn.execute(_MARK, params)
    if await cur.fetchone() is not None:  # (not rowcount: unknown until read in pipeline mode)
        return "applied"
    cur = await conn.execute(_EXISTS, params)
    if await cur.fetchone() is None:
        raise ApplyRefused("receipt.unknown_event", f"we sent no event {receipt.event_id} to {envelope.source}")
    return "duplicate"
