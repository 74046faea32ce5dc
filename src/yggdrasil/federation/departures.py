"""A partner's departure, as its `b2b.partner.departed` event tells us (see `ygg tenant depart`).

The relay has already checked the event like any other: it comes from a registered, active
partner and carries that partner's signature. Here, in the message's savepoint:

* the partner is marked `departed` in `b2b_partners` (audited, with the partner as actor), so
  the relay refuses every later event of it, including those later in the same fetched batch;
* nothing the partner's events created is deleted or changed: purchase and sales orders keep
  `b2b_source_tenant` and `b2b_source_order_id`, the inbox, quarantine and approvals stay;
* our published events that still wait for the partner's receipt stop waiting (the publisher
  would otherwise send them again, every receipt timeout, to a tenant that is gone); they
  stay `published`, which is what they are;
* the event is answered with a `b2b.receipt` (`applied`). Receipts and resync requests are
  never answered (that would loop), but a departure is not one of those: it is the departing
  tenant's last question, and the receipt is how `ygg tenant depart` learns that each partner
  recorded it before the tenant's sidecar is stopped for good. A copy of the event (the
  inbox already has it) is not answered again, as for every `b2b` event, and the departing
  tenant does not resend `b2b` events; the mesh registry tells partners the same thing anyway.

A partner that is already suspended or departed here fails the relay's partner check first, so
its departure event is quarantined (`partner.inactive`) rather than applied: the registry sync
marks it departed in that case.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yggdrasil.events.catalogue import PartnerDepartedPayload
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES, Envelope
from yggdrasil.federation.errors import ApplyRefused
from yggdrasil.federation.partners import Partner
from yggdrasil.federation.receipts import enqueue_receipt

log = logging.getLogger(__name__)

PARTNER_DEPARTED = "b2b.partner.departed"

# RETURNING, not rowcount: in the relay's pipeline mode the count is unknown until read.
_MARK_DEPARTED = """
    UPDATE b2b_partners SET status = 'departed', updated_at = now() WHERE tenant_id = %(partner)s RETURNING 1
"""

# Published events to the departed partner that wait for its receipt: not re-sent any more.
_STOP_WAITING_FOR_RECEIPTS = """
    UPDATE b2b_events SET receipt_due_at = NULL, replay_requested_at = NULL
     WHERE dest_tenant = %(partner)s AND status = 'published' AND receipt_due_at IS NOT NULL
"""


async def record_partner_departure(
    conn: psycopg.AsyncConnection,
    envelope: Envelope,
    partners: dict[str, Partner],
    *,
    tenant_id: str,
    signing_key: Ed25519PrivateKey,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Literal["applied"]:
    """Apply a verified `b2b.partner.departed` in the caller's transaction (the relay's
    savepoint, after the inbox row); returns the outcome, `applied`.

    Raises ApplyRefused if the event announces another tenant's departure: a tenant can only
    speak for itself (the relay then quarantines it)."""
    departure = envelope.typed_payload()
    assert isinstance(departure, PartnerDepartedPayload)
    if departure.tenant_id != envelope.source or envelope.aggregate_id != envelope.source:
        raise ApplyRefused("departure.not_self",
                           f"{envelope.source} announced the departure of {departure.tenant_id}")
    cur = await conn.execute(_MARK_DEPARTED, {"partner": envelope.source})
    if await cur.fetchone() is None:
        raise ApplyRefused("departure.unknown_partner", f"{envelope.source} is not in b2b_partners")
    await conn.execute(_STOP_WAITING_FOR_RECEIPTS, {"partner": envelope.source})
    await enqueue_receipt(conn, signing_key=signing_key, tenant_id=tenant_id, answering=envelope,
                          outcome="applied", max_bytes=max_bytes)
    # The rest of this batch was checked against the partner list read at its start.
    if envelope.source in partners:
        partners[envelope.source] = dataclasses.replace(partners[envelope.source], status="departed")
    log.warning("partner %s departed (as of %s); its later events will be refused, its records are kept",
                envelope.source, departure.departed_at.isoformat())
    return "applied"
