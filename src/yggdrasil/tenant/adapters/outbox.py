"""The transactional outbox: an outbound federated event is a `b2b_events` row written in the
transaction of the change that caused it (migration 0004).

Nothing is published from here. The sidecar's publisher claims pending rows and publishes
their `envelope` bytes unchanged, so what was signed at commit is exactly what travels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yggdrasil.broker.subjects import event_subject
from yggdrasil.events.catalogue import Payload
from yggdrasil.events.catalogue import event_type as catalogued
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES, Envelope
from yggdrasil.events.signing import sign_envelope

# The row lock this upsert takes on the order's counter is held to commit, so two concurrent
# changes of one order get their numbers in commit order and a rollback returns its number.
_NEXT_SEQUENCE = """
    INSERT INTO b2b_order_sequences (aggregate_type, aggregate_id, dest_tenant, last_sequence)
    VALUES (%(aggregate_type)s, %(aggregate_id)s, %(dest_tenant)s, 1)
    ON CONFLICT (aggregate_type, aggregate_id, dest_tenant)
    DO UPDATE SET last_sequence = b2b_order_sequences.last_sequence + 1
    RETURNING last_sequence
"""

_INSERT_EVENT = """
    INSERT INTO b2b_events (event_id, event_type, module, source_tenant, dest_tenant, aggregate_type,
                            aggregate_id, sequence, subject, envelope)
    VALUES (%(event_id)s, %(event_type)s, %(module)s, %(source_tenant)s, %(dest_tenant)s, %(aggregate_type)s,
            %(aggregate_id)s, %(sequence)s, %(subject)s, %(envelope)s)
"""


async def enqueue_event(
    conn: psycopg.AsyncConnection,
    *,
    signing_key: Ed25519PrivateKey,
    source: str,
    destination: str,
    type: str,
    aggregate_id: str,
    payload: Payload | dict[str, Any],
    state_hash: str | None,
    aggregate_type: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Envelope:
    """Write one signed event to the outbox, in the caller's transaction; return its envelope.

    Two round trips: the order's next sequence number, then the row. The caller commits (and
    the commit sends NOTIFY `ygg_outbox`). `aggregate_type` defaults to the catalogue's for
    `type`; receipts and resync requests, which have none, must give one.

    Raises UnknownEventType or PayloadInvalid for an event the catalogue refuses,
    PayloadTooLarge if the encoded envelope exceeds `max_bytes` (destinations would quarantine
    it), ValueError without an aggregate type, and psycopg errors from the database.
    """
    aggregate_type = aggregate_type or catalogued(type).aggregate_type
    if aggregate_type is None:
        raise ValueError(f"{type} has no catalogued aggregate type: pass aggregate_type")
    async with conn.cursor() as cur:
        await cur.execute(_NEXT_SEQUENCE, {"aggregate_type": aggregate_type, "aggregate_id": aggregate_id,
                                           "dest_tenant": destination})
        row = await cur.fetchone()
        assert row is not None
        envelope = sign_envelope(
            Envelope.create(type=type, source=source, destination=destination, aggregate_id=aggregate_id,
                            aggregate_type=aggregate_type, sequence=row[0], payload=payload,
                            state_hash=state_hash),
            signing_key,
        )
        await cur.execute(_INSERT_EVENT, {
            "event_id": envelope.event_id, "event_type": envelope.type, "module": envelope.module,
            "source_tenant": source, "dest_tenant": destination, "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id, "sequence": envelope.sequence,
            "subject": event_subject(envelope.module, destination, source),
            "envelope": envelope.encode(max_bytes),
        })
    return envelope


@dataclass(frozen=True)
class OutboxSummary:
    """For the tenant's `/health` and metrics: is the outbox flowing?"""

    pending: int
    oldest_pending_seconds: float | None
    failed_attempts: int            # pending events whose last publish attempt failed
    last_error: str | None
    quarantined: int                # inbound messages refused, all time
    awaiting_approval: int
    awaiting_receipt: int           # published, the partner has not answered yet
    receipt_overdue: int            # ... past the receipt timeout: re-sent by the sidecar
    # The partner registry's copy, synced by the sidecar from the mesh (None: never synced,
    # or no mesh configured).
    registry_synced_seconds_ago: float | None = None
    registry_sync_failures: int = 0


_SUMMARY = """
    SELECT count(*) FILTER (WHERE e.status = 'pending'),
           extract(epoch FROM now() - min(e.created_at) FILTER (WHERE e.status = 'pending'))::float8,
           count(*) FILTER (WHERE e.status = 'pending' AND e.last_error IS NOT NULL),
           (SELECT last_error FROM b2b_events WHERE status = 'pending' AND last_error IS NOT NULL
             ORDER BY id DESC LIMIT 1),
           (SELECT count(*) FROM b2b_quarantine),
           (SELECT count(*) FROM b2b_approvals WHERE state = 'pending'),
           (SELECT count(*) FROM b2b_events WHERE status = 'published' AND receipt_due_at IS NOT NULL),
           (SELECT count(*) FROM b2b_events
             WHERE status = 'published' AND receipt_due_at IS NOT NULL AND receipt_due_at < now()),
           (SELECT extract(epoch FROM now() - last_success_at)::float8 FROM b2b_registry_sync),
           coalesce((SELECT consecutive_failures FROM b2b_registry_sync), 0)
      FROM b2b_events e WHERE e.status = 'pending'
"""


async def outbox_summary(conn: psycopg.AsyncConnection) -> OutboxSummary:
    """One query; it reads only the partial indexes on pending rows and on rows awaiting a
    receipt, so it stays cheap however long the outbox history grows."""
    cur = await conn.execute(_SUMMARY)
    row = await cur.fetchone()
    assert row is not None
    return OutboxSummary(*row)


_PRUNE_ANSWERED = """
    DELETE FROM b2b_events WHERE id IN (
        SELECT id FROM b2b_events
         WHERE status IN ('acknowledged', 'rejected') AND created_at < now() - make_interval(secs => %(age)s)
         ORDER BY id LIMIT %(limit)s)
"""


async def prune_answered_events(conn: psycopg.AsyncConnection, older_than_days: float, batch: int = 1000) -> int:
    """Delete answered events older than the retention, in batches of `batch` so no single
    transaction grows large; returns how many. Events still pending or awaiting their receipt
    are never touched: the outbox may only forget what the partner has answered."""
    removed = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(_PRUNE_ANSWERED, {"age": older_than_days * 86400, "limit": batch})
        removed += cur.rowcount
        if cur.rowcount < batch:
            return removed
