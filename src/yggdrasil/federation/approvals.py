"""A person's decision on an inbound document waiting in `b2b_approvals`.

Approving applies the order as it now stands (the approval row holds the partner's latest
whole-order payload: a seller's sales order, or a buyer's purchase order) and answers the
partner `accepted`; rejecting answers `rejected` with the
person's reason. Either way the decision, the order it creates and the receipt are written in
one transaction, and the approval row's audit trail names who decided.

A later event of a rejected order finds no order of ours and waits for a new decision, so a
partner that changes a rejected order is heard again rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.rows import dict_row

from yggdrasil.events.envelope import Envelope
from yggdrasil.federation.errors import PartnerInactive, PartnerUnknown
from yggdrasil.federation.orders import apply_order_event
from yggdrasil.federation.partners import load_partners
from yggdrasil.federation.receipts import enqueue_receipt


class ApprovalNotFound(LookupError):
    pass


class ApprovalAlreadyDecided(Exception):
    def __init__(self, approval_id: int, state: str):
        self.approval_id, self.state = approval_id, state
        super().__init__(f"approval {approval_id} is already {state}")


@dataclass(frozen=True)
class ApprovalDecision:
    approval_id: int
    state: str                       # approved | rejected
    # The order an approval created or moved: a purchase order for a seller's document, a
    # sales order for a buyer's.
    order_id: int | None


_LOCK = """
    SELECT id, source_tenant, event_id, event_type, aggregate_type, aggregate_id, sequence, payload, state
      FROM b2b_approvals WHERE id = %(id)s FOR UPDATE
"""

_DECIDE = """
    UPDATE b2b_approvals
       SET state = %(state)s, decided_by = %(decided_by)s, decided_at = now(), reason = %(reason)s, updated_at = now()
     WHERE id = %(id)s
"""


async def approve_inbound_document(
    conn: psycopg.AsyncConnection, approval_id: int, *, decided_by: str, tenant_id: str,
    signing_key: Ed25519PrivateKey, reason: str | None = None,
) -> ApprovalDecision:
    """Create (or update) our order from the waiting document and answer `accepted`.

    Raises ApprovalNotFound, ApprovalAlreadyDecided, PartnerUnknown/PartnerInactive (the
    partner was removed or suspended since), or ApplyRefused if the document still cannot
    become an order (say, a SKU is still unmapped: map it, then approve again)."""
    async with conn.transaction():  # a savepoint if the caller has a transaction open
        row = await _lock_pending(conn, approval_id, decided_by)
        partner = (await load_partners(conn)).get(row["source_tenant"])
        if partner is None:
            raise PartnerUnknown(f"{row['source_tenant']} is not in the partner registry")
        if not partner.active:
            raise PartnerInactive(f"{row['source_tenant']} is {partner.status}")
        envelope = _document(row, tenant_id)
        result = await apply_order_event(conn, envelope, partner, approved=True)
        await conn.execute(_DECIDE, {"id": approval_id, "state": "approved", "decided_by": decided_by,
                                     "reason": reason})
        await enqueue_receipt(conn, signing_key=signing_key, tenant_id=tenant_id, answering=envelope,
                              outcome="accepted", reason=reason)
    return ApprovalDecision(approval_id, "approved", result.order_id)


async def reject_inbound_document(
    conn: psycopg.AsyncConnection, approval_id: int, *, decided_by: str, reason: str, tenant_id: str,
    signing_key: Ed25519PrivateKey,
) -> ApprovalDecision:
    """Refuse the waiting document and answer `rejected` with `reason` (required: the partner
    needs to know why). Raises ApprovalNotFound, ApprovalAlreadyDecided, ValueError."""
    if not reason or not reason.strip():
        raise ValueError("a rejection needs a reason for the partner")
    async with conn.transaction():  # a savepoint if the caller has a transaction open
        row = await _lock_pending(conn, approval_id, decided_by)
        await conn.execute(_DECIDE, {"id": approval_id, "state": "rejected", "decided_by": decided_by,
                                     "reason": reason})
        await enqueue_receipt(conn, signing_key=signing_key, tenant_id=tenant_id, answering=_document(row, tenant_id),
                              outcome="rejected", reason=reason)
    return ApprovalDecision(approval_id, "rejected", None)


async def _lock_pending(conn: psycopg.AsyncConnection, approval_id: int, decided_by: str) -> dict[str, Any]:
    await conn.execute("SELECT set_config('ygg.actor', %s, true)", (decided_by,))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LOCK, {"id": approval_id})
        row = await cur.fetchone()
    if row is None:
        raise ApprovalNotFound(f"no approval {approval_id}")
    if row["state"] != "pending":
        raise ApprovalAlreadyDecided(approval_id, row["state"])
    return row


def _document(row: dict[str, Any], tenant_id: str) -> Envelope:
    """The waiting document as the (already verified) event it last came in."""
    return Envelope.create(
        type=row["event_type"], source=row["source_tenant"], destination=tenant_id,
        aggregate_type=row["aggregate_type"], aggregate_id=row["aggregate_id"], sequence=row["sequence"],
        payload=row["payload"], event_id=row["event_id"],
    )
