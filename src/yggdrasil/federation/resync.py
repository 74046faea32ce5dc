"""Gaps that do not fill by themselves: an event lost past the broker's retention, deleted from
the stream, or never published by a source that was restored from a backup.

The destination notices a gap when a later event of the same order has been held for longer
than `resync_after_seconds`, and sends the source a `b2b.resync.request` for that order from the
first missing number; it asks again every `resync_after_seconds` while the gap stays open. The
source marks the order's events from that number for replay, and its publisher republishes them
from the outbox (under new message ids, which the broker does not de-duplicate away). The
destination's inbox drops what it already had; the missing events apply and drain the held ones.

A gap with nothing held behind it (the order's last event lost) is not visible here: the
source finds it instead, because that event's receipt never comes (publisher.py, receipt
timeout), and sends it again from its outbox.

The request's envelope aggregate is `b2b_resync` / `<aggregate type>:<aggregate id>`: its own
counter, so a request never uses up a number of one of our own orders' sequences, and the
source learns which of its aggregates is meant.
"""

from __future__ import annotations

import logging

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yggdrasil.events.catalogue import ResyncRequestPayload
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES, Envelope
from yggdrasil.federation.errors import ApplyRefused
from yggdrasil.tenant.adapters.outbox import enqueue_event

log = logging.getLogger(__name__)

RESYNC_AGGREGATE = "b2b_resync"

_OPEN_GAPS = """
    SELECT h.source_tenant, h.aggregate_type, h.aggregate_id, coalesce(s.last_sequence, 0) + 1 AS from_sequence
      FROM b2b_held_events h
      LEFT JOIN b2b_inbound_sequences s USING (source_tenant, aggregate_type, aggregate_id)
     WHERE h.held_at <= now() - make_interval(secs => %(after)s)
       AND (h.resync_requested_at IS NULL OR h.resync_requested_at <= now() - make_interval(secs => %(after)s))
     GROUP BY h.source_tenant, h.aggregate_type, h.aggregate_id, s.last_sequence
     ORDER BY min(h.held_at)
     LIMIT %(limit)s
"""

_MARK_REQUESTED = """
    UPDATE b2b_held_events SET resync_requested_at = now()
     WHERE source_tenant = %(source)s AND aggregate_type = %(aggregate_type)s AND aggregate_id = %(aggregate_id)s
"""

# The NOTIFY wakes our publisher at commit, as an INSERT into the outbox would.
_MARK_FOR_REPLAY = """
    WITH marked AS (
        UPDATE b2b_events SET replay_requested_at = now(), replays = replays + 1
         WHERE dest_tenant = %(requester)s AND aggregate_type = %(aggregate_type)s
           AND aggregate_id = %(aggregate_id)s AND sequence >= %(from_sequence)s
        RETURNING 1
    )
    SELECT count(*), pg_notify('ygg_outbox', '') FROM marked
"""


async def request_resyncs(
    conn: psycopg.AsyncConnection, *, tenant_id: str, signing_key: Ed25519PrivateKey, after_seconds: float,
    limit: int = 100, max_bytes: int = DEFAULT_MAX_BYTES,
) -> int:
    """Ask the source of every gap open for `after_seconds` to replay it; in the caller's
    transaction. Returns the number of requests queued."""
    cur = await conn.execute(_OPEN_GAPS, {"after": after_seconds, "limit": limit})
    gaps = await cur.fetchall()
    for source, aggregate_type, aggregate_id, from_sequence in gaps:
        await enqueue_event(
            conn, signing_key=signing_key, source=tenant_id, destination=source, type="b2b.resync.request",
            aggregate_type=RESYNC_AGGREGATE, aggregate_id=f"{aggregate_type}:{aggregate_id}"[:100],
            payload=ResyncRequestPayload(aggregate_id=aggregate_id, from_sequence=from_sequence),
            state_hash=None, max_bytes=max_bytes,
        )
        await conn.execute(_MARK_REQUESTED, {"source": source, "aggregate_type": aggregate_type,
                                             "aggregate_id": aggregate_id})
        log.warning("gap in %s %s from %s at sequence %s: asked for a replay", aggregate_type, aggregate_id,
                    source, from_sequence)
    return len(gaps)


async def mark_for_replay(conn: psycopg.AsyncConnection, envelope: Envelope) -> int:
    """Apply a verified `b2b.resync.request`: mark the requester's events of that aggregate,
    from the requested number on, for the publisher to send again. Returns how many.

    Raises ApplyRefused if the request's aggregate and payload disagree."""
    request = envelope.typed_payload()
    assert isinstance(request, ResyncRequestPayload)
    aggregate_type, separator, aggregate_id = envelope.aggregate_id.partition(":")
    if envelope.aggregate_type != RESYNC_AGGREGATE or not separator or aggregate_id != request.aggregate_id:
        raise ApplyRefused("resync.malformed",
                           f"aggregate {envelope.aggregate_type}/{envelope.aggregate_id} does not name "
                           f"{request.aggregate_id}")
    cur = await conn.execute(_MARK_FOR_REPLAY, {"requester": envelope.source, "aggregate_type": aggregate_type,
                                                "aggregate_id": aggregate_id,
                                                "from_sequence": request.from_sequence})
    row = await cur.fetchone()
    count = row[0] if row else 0
    log.info("%s asked for %s %s from sequence %s: %s events marked for replay", envelope.source,
             aggregate_type, aggregate_id, request.from_sequence, count)
    return count
