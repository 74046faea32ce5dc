"""Receipts: the destination answers every order event with what it recorded, and the source
marks its outbox row, so the seller sees per order what the buyer did with each change.

A receipt is itself an event (`b2b.receipt`), sent through the destination's outbox in the
transaction that recorded the outcome: it cannot be lost, and it cannot claim what was rolled
back. Its aggregate is the event it answers (`b2b_event` / event id), so the receipts of one
event are numbered 1, 2, 3 (held, then applied; awaiting approval, then accepted): the source
keeps the latest and ignores an older one that arrives late. Receipts are never answered.

On the wire, receipts waiting in the outbox for the same destination travel together: the
publisher packs a run of them into one `b2b.receipts` bundle, signed once (ReceiptBundler).
Each outbox row stays the record of its receipt; the bundle only carries them. A receiver
verifies one signature per bundle instead of one per receipt, and the broker stores one
message, which is most of what a receipt used to cost both sides. The bundle's id is derived
from the receipts it carries, so the same run sent again is the same message (the broker's
de-duplication drops it, the inbox catches what gets through); a different cut of the same
receipts, after a publisher restart, is caught receipt by receipt in the receiver's inbox,
which keys each item by the receipt's own event id.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yggdrasil.broker.subjects import event_subject
from yggdrasil.events.catalogue import (
    MAX_RECEIPTS_PER_BUNDLE,
    ReceiptBundlePayload,
    ReceiptItem,
    ReceiptOutcome,
    ReceiptPayload,
)
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES, Envelope
from yggdrasil.events.errors import PayloadTooLarge
from yggdrasil.events.signing import sign_envelope
from yggdrasil.federation.errors import ApplyRefused
from yggdrasil.tenant.adapters.outbox import enqueue_event

RECEIPT_AGGREGATE = "b2b_event"
# uuid5 namespace of bundle ids (a fixed random value: only its constancy matters).
_BUNDLE_NAMESPACE = uuid.UUID("6f1c3d0e-8a52-4b7e-9d43-2f0a9b5e7c11")

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


# -- bundles ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedReceipt:
    """A receipt row claimed from our outbox: its id, its signed envelope, its replay count."""

    row_id: int
    envelope: bytes
    replays: int = 0


@dataclass(frozen=True)
class OutboxMessage:
    """What the publisher sends for one or more outbox rows (a bundle carries several)."""

    row_ids: list[int]
    subject: str
    data: bytes
    message_id: str


@dataclass(frozen=True)
class SignedBundle:
    """A `b2b.receipts` envelope, signed, with its wire bytes and how many receipts it carries."""

    envelope: Envelope
    data: bytes
    count: int


@dataclass(frozen=True)
class ReceiptBundler:
    """Packs receipts for one destination into signed `b2b.receipts` bundles."""

    tenant_id: str
    signing_key: Ed25519PrivateKey
    max_bytes: int = DEFAULT_MAX_BYTES

    def bundle(self, destination: str, queued: Sequence[QueuedReceipt]) -> list[OutboxMessage]:
        """Queued receipt rows as one bundle, or several where one would exceed `max_bytes` or
        the item limit. The same receipts (and replay counts) make the same bundle id, so a
        re-sent run is one message."""
        items = [_item(receipt.envelope) for receipt in queued]
        subject = event_subject("b2b", destination, self.tenant_id)
        messages, at = [], 0
        for signed in self.sign(destination, items, [receipt.replays for receipt in queued]):
            rows = [receipt.row_id for receipt in queued[at:at + signed.count]]
            messages.append(OutboxMessage(rows, subject, signed.data, str(signed.envelope.event_id)))
            at += signed.count
        return messages

    def sign(self, destination: str, items: Sequence[ReceiptItem],
             replays: Sequence[int] | None = None) -> list[SignedBundle]:
        """`items` in signed bundles, in order, split where one would be too large. Raises
        PayloadTooLarge if a single receipt is too large even alone."""
        return self._pack(destination, list(items), list(replays) if replays is not None else [0] * len(items))

    def _pack(self, destination: str, items: list[ReceiptItem], replays: list[int]) -> list[SignedBundle]:
        if len(items) > MAX_RECEIPTS_PER_BUNDLE:
            return self._split(destination, items, replays)
        bundle_id = uuid.uuid5(_BUNDLE_NAMESPACE, "\n".join(
            f"{item.receipt_id}:{replay}" for item, replay in zip(items, replays, strict=True)))
        envelope = sign_envelope(Envelope.create(
            type="b2b.receipts", source=self.tenant_id, destination=destination, aggregate_id=str(bundle_id),
            sequence=1, payload=ReceiptBundlePayload(receipts=items), event_id=bundle_id), self.signing_key)
        try:
            data = envelope.encode(self.max_bytes)
        except PayloadTooLarge:
            if len(items) == 1:
                raise  # too large even alone: the publisher sends that receipt as stored
            return self._split(destination, items, replays)
        return [SignedBundle(envelope, data, len(items))]

    def _split(self, destination: str, items: list[ReceiptItem], replays: list[int]) -> list[SignedBundle]:
        half = len(items) // 2
        return [*self._pack(destination, items[:half], replays[:half]),
                *self._pack(destination, items[half:], replays[half:])]


def _item(raw: bytes) -> ReceiptItem:
    # Our own receipt, signed and checked when it was queued: read, not verified again.
    data = json.loads(raw)
    payload = data["payload"]
    return ReceiptItem(receipt_id=data["event_id"], event_id=payload["event_id"], outcome=payload["outcome"],
                       reason=payload.get("reason"), sequence=data["sequence"])


def bundle_items(envelope: Envelope) -> list[ReceiptItem]:
    """The receipts a verified `b2b.receipt` or `b2b.receipts` carries, as bundle items."""
    payload = envelope.typed_payload()
    if isinstance(payload, ReceiptBundlePayload):
        return list(payload.receipts)
    assert isinstance(payload, ReceiptPayload)
    return [ReceiptItem(receipt_id=envelope.event_id, event_id=payload.event_id, outcome=payload.outcome,
                        reason=payload.reason, sequence=envelope.sequence)]


_INSERT_ITEM_INBOX = """
    INSERT INTO b2b_inbox (source_tenant, event_id, event_type, aggregate_type, aggregate_id, sequence,
                           outcome, applied_at)
    VALUES (%(from)s, %(receipt_id)s, 'b2b.receipt', 'b2b_event', %(event_id)s::text, %(sequence)s,
            'applied', now())
    ON CONFLICT (source_tenant, event_id) DO NOTHING
    RETURNING 1
"""

_SET_ITEM_OUTCOME = """
    UPDATE b2b_inbox SET outcome = %(outcome)s, applied_at = NULL
     WHERE source_tenant = %(from)s AND event_id = %(receipt_id)s
"""


@dataclass
class BundleOutcome:
    applied: int = 0
    duplicate: int = 0
    unknown: list[ReceiptItem] = field(default_factory=list)  # for events we never sent that sender


async def apply_receipt_bundle(conn: psycopg.AsyncConnection, envelope: Envelope) -> BundleOutcome:
    """Record each receipt of a verified bundle as apply_receipt records one, each with an
    inbox row of its own (a receipt already recorded, under this bundle or another, is a
    duplicate). A receipt for an event we never sent to the bundle's sender is not applied:
    its inbox row says `rejected`, and the caller reports it (returned in `unknown`)."""
    outcome = BundleOutcome()
    for item in bundle_items(envelope):
        params = {"from": envelope.source, "receipt_id": item.receipt_id, "event_id": item.event_id,
                  "outcome": item.outcome, "reason": item.reason, "sequence": item.sequence}
        cur = await conn.execute(_INSERT_ITEM_INBOX, params)
        if await cur.fetchone() is None:
            outcome.duplicate += 1
            continue
        cur = await conn.execute(_MARK, params)
        if await cur.fetchone() is not None:
            outcome.applied += 1
            continue
        cur = await conn.execute(_EXISTS, params)
        if await cur.fetchone() is None:
            outcome.unknown.append(item)
            await conn.execute(_SET_ITEM_OUTCOME, {**params, "outcome": "rejected"})
        else:
            outcome.duplicate += 1
            await conn.execute(_SET_ITEM_OUTCOME, {**params, "outcome": "duplicate"})
    return outcome
