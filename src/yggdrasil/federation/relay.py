"""The inbound relay: events addressed to this tenant, from the broker into the database.

For each fetched batch, one database transaction. The batch's common case (new events, in
sequence, that simply apply, and receipts) goes first, a group per source and module with one
statement per kind of row (batch.py); everything else follows one message at a time, each in
its own savepoint, so a bad message does not sink the batch. A message leaves with an explicit
verb, always after the commit: `ack` when its outcome is recorded (applied, duplicate, held,
awaiting approval, rejected with a receipt), `term` when it failed a check and sits in
quarantine (the row is then the only copy: it is committed before the broker forgets the
message), `nak` with a delay when the database is unavailable (nothing was recorded; the broker
redelivers).

The checks, in order: the subject names an event for us; the subject's source is a registered,
active partner whose partnership covers the subject's module; the envelope decodes (size,
JSON, schema version, fields, type, payload schema); its source, module and destination are
the subject's; its signature verifies with the partner's key. The subject is trusted because
the broker's permissions let a tenant publish only with itself as source; the signature is
checked anyway, in case one got through.

Then, in the message's savepoint: the inbox row (source + event id; a duplicate stops here,
and a copy of an order event is answered again with what we recorded, since the source may be
sending it again because our first receipt never reached it: see publisher.py, receipt
timeout), the sequence check (an older or equal number is a duplicate, a number ahead of the
next is held durably), the effect, the new sequence number, the receipt to the source, and
any held events that are now next, each in its own savepoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

import nats.errors
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from yggdrasil.broker.streams import consumer_spec
from yggdrasil.broker.subjects import MODULES, InvalidSubject, parse_event_subject
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES, Envelope
from yggdrasil.events.errors import EventRejected
from yggdrasil.events.signing import verify_envelope
from yggdrasil.federation.backoff import Backoff
from yggdrasil.federation.batch import Inbound, ahead_of_transaction, apply_common_case
from yggdrasil.federation.errors import (
    ApplyRefused,
    InternalError,
    Misrouted,
    PartnerInactive,
    PartnerModuleNotAgreed,
    PartnerUnknown,
    SubjectInvalid,
    SubjectMismatch,
)
from yggdrasil.federation.orders import apply_order_event
from yggdrasil.federation.partners import Partner, load_partners
from yggdrasil.federation.receipts import apply_receipt, apply_receipt_bundle, enqueue_receipt
from yggdrasil.federation.resync import mark_for_replay, request_resyncs
from yggdrasil.federation.status import RelayStatus

log = logging.getLogger(__name__)

# The database is unavailable (connection lost, pool exhausted, server shutting down,
# serialization failure or deadlock): nothing was recorded, the broker must redeliver.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)

Outcome = Literal["applied", "duplicate", "held", "awaiting_approval", "rejected", "quarantined"]


@dataclass(frozen=True)
class InboundMessage:
    subject: str
    data: bytes


@dataclass(frozen=True)
class Disposition:
    """What happened to one message, and what to tell the broker once the batch commits."""

    verb: Literal["ack", "term"]
    outcome: Outcome
    reason: str | None = None


_APPLIED = Disposition("ack", "applied")


@dataclass(frozen=True)
class RelayContext:
    tenant_id: str
    signing_key: Ed25519PrivateKey
    max_bytes: int = DEFAULT_MAX_BYTES


# -- checks (no I/O) ------------------------------------------------------------------------------


def verify_message(message: InboundMessage, partners: dict[str, Partner], tenant_id: str,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Envelope, Partner]:
    """The checked envelope and its partner. Raises an EventRejected subclass naming the first
    check that failed."""
    try:
        subject = parse_event_subject(message.subject)
    except InvalidSubject as error:
        raise SubjectInvalid(str(error)) from None
    if subject.destination != tenant_id:
        raise Misrouted(f"subject {message.subject} is not addressed to {tenant_id}")
    partner = partners.get(subject.source)
    if partner is None:
        raise PartnerUnknown(f"{subject.source} is not in the partner registry")
    if not partner.active:
        raise PartnerInactive(f"{subject.source} is {partner.status}")
    # `b2b` carries receipts, resync requests and departures: the protocol itself, whatever
    # the partnership covers.
    if subject.module != "b2b" and subject.module not in partner.modules:
        raise PartnerModuleNotAgreed(f"the partnership with {subject.source} does not cover {subject.module} "
                                     f"(it covers {', '.join(partner.modules)})")
    envelope = Envelope.decode(message.data, max_bytes)
    if (envelope.source, envelope.module) != (subject.source, subject.module):
        raise SubjectMismatch(f"subject {message.subject} carries a {envelope.module} event from {envelope.source}")
    if envelope.destination != tenant_id:
        raise Misrouted(f"envelope is addressed to {envelope.destination}, not {tenant_id}")
    verify_envelope(envelope, partner.public_key)
    return envelope, partner


def _claimed_source(subject: str) -> str | None:
    try:
        return parse_event_subject(subject).source
    except InvalidSubject:
        return None


# -- SQL ------------------------------------------------------------------------------------------

# The audit trail names the partner whose event caused a change (transaction-local setting,
# undone with the savepoint).
_INSERT_INBOX = """
    WITH actor AS (SELECT set_config('ygg.actor', %(actor)s, true))
    INSERT INTO b2b_inbox (source_tenant, event_id, event_type, aggregate_type, aggregate_id, sequence,
                           outcome, applied_at)
    SELECT %(source)s, %(event_id)s, %(event_type)s, %(aggregate_type)s, %(aggregate_id)s, %(sequence)s,
           %(outcome)s, CASE WHEN %(outcome)s::text = 'applied' THEN now() END
      FROM actor
    ON CONFLICT (source_tenant, event_id) DO NOTHING
    RETURNING 1
"""

_SET_INBOX_OUTCOME = """
    UPDATE b2b_inbox SET outcome = %(outcome)s::text,
                         applied_at = CASE WHEN %(outcome)s::text = 'applied' THEN now() END
     WHERE source_tenant = %(source)s AND event_id = %(event_id)s
"""

# Locks the aggregate's counter for the rest of the transaction (a no-op update still takes the
# row lock), and says whether anything is held for it, so the common case skips the drain.
_LOCK_SEQUENCE = """
    INSERT INTO b2b_inbound_sequences (source_tenant, aggregate_type, aggregate_id, last_sequence)
    VALUES (%(source)s, %(aggregate_type)s, %(aggregate_id)s, 0)
    ON CONFLICT (source_tenant, aggregate_type, aggregate_id)
    DO UPDATE SET last_sequence = b2b_inbound_sequences.last_sequence
    RETURNING last_sequence,
              EXISTS (SELECT 1 FROM b2b_held_events h
                       WHERE h.source_tenant = %(source)s AND h.aggregate_type = %(aggregate_type)s
                         AND h.aggregate_id = %(aggregate_id)s) AS has_held
"""

_ADVANCE_SEQUENCE = """
    INSERT INTO b2b_inbound_sequences (source_tenant, aggregate_type, aggregate_id, last_sequence)
    VALUES (%(source)s, %(aggregate_type)s, %(aggregate_id)s, %(sequence)s)
    ON CONFLICT (source_tenant, aggregate_type, aggregate_id)
    DO UPDATE SET last_sequence = greatest(b2b_inbound_sequences.last_sequence, EXCLUDED.last_sequence),
                  updated_at = now()
"""

_HOLD = """
    INSERT INTO b2b_held_events (source_tenant, aggregate_type, aggregate_id, sequence, event_id, subject, raw)
    VALUES (%(source)s, %(aggregate_type)s, %(aggregate_id)s, %(sequence)s, %(event_id)s, %(subject)s, %(raw)s)
    ON CONFLICT DO NOTHING
"""

# Takes the next held event out, with any held at numbers already passed (copies, under another
# event id, of what was applied: they are duplicates).
_TAKE_HELD = """
    DELETE FROM b2b_held_events h
     USING b2b_inbound_sequences s
     WHERE s.source_tenant = h.source_tenant AND s.aggregate_type = h.aggregate_type
       AND s.aggregate_id = h.aggregate_id
       AND h.source_tenant = %(source)s AND h.aggregate_type = %(aggregate_type)s
       AND h.aggregate_id = %(aggregate_id)s AND h.sequence <= s.last_sequence + 1
    RETURNING h.sequence, h.event_id, h.subject, h.raw, h.sequence <= s.last_sequence AS passed
"""

# What we recorded for an event we have seen before, to answer its copy with: the inbox
# outcome, the decision if a person decided on it, the refusal if we refused it; and whether a
# receipt for it is still waiting in our outbox (then that one answers the copy too), alone or
# in a bundle the fast pass stored (read only here, for a copy: pending bundles are few).
_RECORDED = """
    SELECT i.outcome,
           CASE WHEN i.outcome = 'awaiting_approval' THEN
               (SELECT a.state FROM b2b_approvals a
                 WHERE a.source_tenant = i.source_tenant AND a.event_id = i.event_id AND a.state <> 'pending'
                 ORDER BY a.id DESC LIMIT 1)
           END AS decision,
           CASE WHEN i.outcome IN ('rejected', 'awaiting_approval') THEN coalesce(
               (SELECT a.reason FROM b2b_approvals a
                 WHERE a.source_tenant = i.source_tenant AND a.event_id = i.event_id AND a.state = 'rejected'
                 ORDER BY a.id DESC LIMIT 1),
               (SELECT q.reason || ': ' || q.detail FROM b2b_quarantine q
                 WHERE q.source_tenant = i.source_tenant AND q.event_id = i.event_id
                 ORDER BY q.id DESC LIMIT 1))
           END AS reason,
           EXISTS (SELECT 1 FROM b2b_events r
                    WHERE r.aggregate_type = 'b2b_event' AND r.aggregate_id = i.event_id::text
                      AND r.dest_tenant = i.source_tenant AND r.status = 'pending')
           OR EXISTS (SELECT 1 FROM b2b_events r
                       WHERE r.status = 'pending' AND r.event_type = 'b2b.receipts'
                         AND r.dest_tenant = i.source_tenant
                         AND convert_from(r.envelope, 'UTF8')::jsonb -> 'payload' -> 'receipts'
                             @> jsonb_build_array(jsonb_build_object('event_id', i.event_id::text))) AS receipt_pending
      FROM b2b_inbox i
     WHERE i.source_tenant = %(source)s AND i.event_id = %(event_id)s
"""

_QUARANTINE = """
    INSERT INTO b2b_quarantine (source_tenant, event_id, subject, raw, reason, detail)
    VALUES (%(source)s, %(event_id)s, %(subject)s, %(raw)s, %(reason)s, %(detail)s)
"""


# -- applying a batch -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedAhead:
    """A batch's messages checked before its transaction, against the registry as it was then:
    the ones that passed, by batch index."""

    partners: dict[str, Partner]
    verified: dict[int, Inbound]


def check_messages(messages: Sequence[InboundMessage], partners: dict[str, Partner], ctx: RelayContext,
                   start: int = 0, *, ahead: bool = False) -> dict[int, Inbound]:
    """The messages that pass every check, by batch index (`start` is the first one's);
    `ahead`: with the fast pass's work that needs no database done for each order event
    (batch.ahead_of_transaction)."""
    verified: dict[int, Inbound] = {}
    for index, message in enumerate(messages, start):
        with contextlib.suppress(EventRejected):
            item = Inbound(index, *verify_message(message, partners, ctx.tenant_id, ctx.max_bytes))
            if ahead:
                item = ahead_of_transaction(item)
            verified[index] = item
    return verified


async def apply_inbound_batch(
    conn: psycopg.AsyncConnection, messages: Sequence[InboundMessage], ctx: RelayContext, *,
    partners: dict[str, Partner] | None = None, checked: CheckedAhead | None = None,
) -> list[Disposition]:
    """Check and record each message, in the caller's transaction; the caller commits and
    then tells the broker. Raises only for a transient database error (see TRANSIENT_ERRORS),
    after which nothing of the batch may be committed.

    `partners`: the registry, if the caller has read it in this transaction already.
    `checked`: the checks, if done ahead; used only if the registry has not changed since."""
    if partners is None:
        partners = await load_partners(conn)
    # Each message is checked once (the signature check is the relay's largest cost); the
    # common case goes first, a group of events at a time (batch.py); the rest, one by one.
    if checked is not None and checked.partners == partners:
        verified = checked.verified
    else:
        verified = check_messages(messages, partners, ctx)
    applied = await apply_common_case(conn, list(verified.values()), tenant_id=ctx.tenant_id,
                                      signing_key=ctx.signing_key, max_bytes=ctx.max_bytes)
    # Pipeline mode: a statement whose result the code does not read (the savepoint, its
    # release, advancing a sequence, the receipt's row) travels with the next one that is read,
    # instead of costing a round trip of its own. Every message still ends with a sync, inside
    # its savepoint, so an error is always the message's own (see _savepoint).
    if len(applied) == len(messages):
        return [_APPLIED] * len(messages)
    async with conn.pipeline() as pipeline:
        return [_APPLIED if index in applied
                else await _handle(conn, message, partners, ctx, pipeline, verified.get(index))
                for index, message in enumerate(messages)]


@contextlib.asynccontextmanager
async def _savepoint(conn: psycopg.AsyncConnection, pipeline: psycopg.AsyncPipeline | None) -> AsyncIterator[None]:
    """One message's savepoint. Outside pipeline mode, psycopg's own. In pipeline mode,
    psycopg's nested transaction() would sync three times; this one syncs once on success
    (RELEASE, then the results of everything the message sent: an error in a statement whose
    result was not read still surfaces here, and rolls the message back) and, on an error,
    syncs the aborted pipeline and rolls back to the savepoint before re-raising. (A
    cancellation is left to the batch's transaction, which rolls back as a whole.)"""
    if pipeline is None:
        async with conn.transaction():
            yield
        return
    await conn.execute("SAVEPOINT ygg_message")
    try:
        yield
        await conn.execute("RELEASE SAVEPOINT ygg_message")
        await pipeline.sync()
    except Exception:
        try:
            await pipeline.sync()  # out of the aborted state
        except psycopg.errors.PipelineAborted:
            pass  # the statements skipped after the one that failed
        except TRANSIENT_ERRORS:
            raise
        except psycopg.Error:
            pass  # a statement whose result was not read failed: rolled back below all the same
        await conn.execute("ROLLBACK TO SAVEPOINT ygg_message")
        await conn.execute("RELEASE SAVEPOINT ygg_message")
        await pipeline.sync()
        raise


async def _sync(pipeline: psycopg.AsyncPipeline | None) -> None:
    """Make sure what was sent so far has run (and raise its error here, if any)."""
    if pipeline is not None:
        await pipeline.sync()


async def _handle(conn: psycopg.AsyncConnection, message: InboundMessage, partners: dict[str, Partner],
                  ctx: RelayContext, pipeline: psycopg.AsyncPipeline | None = None,
                  checked: Inbound | None = None) -> Disposition:
    """`checked`: the message's checks passed at the start of the batch. They stand while its
    partner's entry is the same; an earlier event of the batch may have replaced it (a
    departure), and then the message is checked again."""
    try:
        if checked is not None and partners.get(checked.envelope.source) is checked.partner:
            envelope, partner = checked.envelope, checked.partner
        else:
            envelope, partner = verify_message(message, partners, ctx.tenant_id, ctx.max_bytes)
    except EventRejected as rejection:
        log.warning("quarantined a message on %s: %s", message.subject, rejection)
        await _quarantine(conn, message, rejection, source=_claimed_source(message.subject))
        await _sync(pipeline)
        return Disposition("term", "quarantined", rejection.reason)

    try:
        async with _savepoint(conn, pipeline):
            return await _record(conn, message, envelope, partner, partners, ctx)
    except TRANSIENT_ERRORS:
        raise
    except ApplyRefused as error:
        refusal = error
    except psycopg.Error as error:
        # The database refused the effect (a constraint, a value out of range): the event's
        # content, not the database's health, so redelivering would fail the same way.
        refusal = ApplyRefused("apply.refused", _first_line(error))
    except Exception as error:  # a bug of ours: keep the event, do not lose the relay
        log.exception("internal error applying event %s from %s", envelope.event_id, envelope.source)
        internal = InternalError(f"{type(error).__name__}: {error}")
        await _quarantine(conn, message, internal, source=envelope.source, event_id=str(envelope.event_id))
        await _sync(pipeline)
        return Disposition("term", "quarantined", internal.reason)
    # The savepoint was rolled back: record the refusal instead of the effect.
    disposition = await _record_refusal(conn, message, envelope, partners, refusal, ctx)
    await _sync(pipeline)
    return disposition


async def _record(conn: psycopg.AsyncConnection, message: InboundMessage, envelope: Envelope, partner: Partner,
                  partners: dict[str, Partner], ctx: RelayContext) -> Disposition:
    key = _aggregate_key(envelope)
    cur = await conn.execute(_INSERT_INBOX, {**key, **_inbox_fields(envelope), "outcome": "applied"})
    if await cur.fetchone() is None:
        # This very event was recorded before: a producer retry, a redelivery, or the source
        # sending it again because our receipt did not reach it.
        if envelope.module != "b2b":  # receipts and resync requests are never answered
            await _answer_again(conn, ctx, envelope)
        return Disposition("ack", "duplicate")

    if envelope.type == "b2b.receipt":
        outcome = await apply_receipt(conn, envelope)
        if outcome != "applied":
            await _set_inbox_outcome(conn, envelope, outcome)
        return Disposition("ack", outcome)
    if envelope.type == "b2b.receipts":
        return await _record_bundle(conn, message, envelope)
    if envelope.type == "b2b.resync.request":
        await mark_for_replay(conn, envelope)
        return Disposition("ack", "applied")
    if envelope.type == "b2b.partner.departed":
        from yggdrasil.federation.departures import record_partner_departure

        return Disposition("ack", await record_partner_departure(
            conn, envelope, partners, tenant_id=ctx.tenant_id, signing_key=ctx.signing_key, max_bytes=ctx.max_bytes))
    # Order events from here on: sales.order.* from a seller, purchasing.order.* from a buyer.

    cur = await conn.execute(_LOCK_SEQUENCE, key)
    row = await cur.fetchone()
    assert row is not None
    last, has_held = row
    if envelope.sequence <= last:
        # Another event id with a number already applied: the source re-sent a change.
        await _set_inbox_outcome(conn, envelope, "duplicate")
        await _receipt(conn, ctx, envelope, "duplicate", f"sequence {envelope.sequence} was already applied")
        return Disposition("ack", "duplicate")
    if envelope.sequence > last + 1:
        await conn.execute(_HOLD, {**key, "sequence": envelope.sequence, "event_id": envelope.event_id,
                                   "subject": message.subject, "raw": message.data})
        await _set_inbox_outcome(conn, envelope, "held")
        await _receipt(conn, ctx, envelope, "held", f"waiting for sequence {last + 1}")
        return Disposition("ack", "held")

    result = await apply_order_event(conn, envelope, partner)
    await conn.execute(_ADVANCE_SEQUENCE, {**key, "sequence": envelope.sequence})
    if result.outcome != "applied":
        await _set_inbox_outcome(conn, envelope, result.outcome)
    await _receipt(conn, ctx, envelope, result.outcome, result.detail or None)
    if has_held:
        await _drain_held(conn, key, partners, ctx)
    return Disposition("ack", result.outcome)


async def _record_bundle(conn: psycopg.AsyncConnection, message: InboundMessage, envelope: Envelope) -> Disposition:
    """Receipts in a bundle: each recorded on its own; one for an event we never sent to the
    sender is kept in quarantine (the bundle's bytes, naming the receipt), as a lone receipt
    for one would be, and the rest still count."""
    result = await apply_receipt_bundle(conn, envelope)
    for item in result.unknown:
        refusal = ApplyRefused("receipt.unknown_event", f"receipt {item.receipt_id} in bundle {envelope.event_id}: "
                                                        f"we sent no event {item.event_id} to {envelope.source}")
        log.warning("refused a receipt from %s: %s", envelope.source, refusal)
        await _quarantine(conn, message, refusal, source=envelope.source, event_id=str(item.receipt_id))
    if result.applied:
        return _APPLIED
    outcome: Outcome = "rejected" if result.unknown else "duplicate"
    await _set_inbox_outcome(conn, envelope, outcome)
    return Disposition("ack", outcome, "receipt.unknown_event" if result.unknown else None)


async def _record_refusal(conn: psycopg.AsyncConnection, message: InboundMessage, envelope: Envelope,
                          partners: dict[str, Partner], refusal: EventRejected, ctx: RelayContext) -> Disposition:
    """A verified event whose effect was refused: kept in quarantine, answered `rejected`, and
    its sequence number used up, so that the source's later changes are not held behind it."""
    log.warning("refused event %s (%s) from %s: %s", envelope.event_id, envelope.type, envelope.source, refusal)
    key = _aggregate_key(envelope)
    await _quarantine(conn, message, refusal, source=envelope.source, event_id=str(envelope.event_id))
    await conn.execute(_INSERT_INBOX, {**key, **_inbox_fields(envelope), "outcome": "rejected"})
    if envelope.module == "b2b":
        return Disposition("ack", "rejected", refusal.reason)  # receipts are not answered
    await _receipt(conn, ctx, envelope, "rejected", f"{refusal.reason}: {refusal.detail}")
    # An order event: its number is used up.
    await conn.execute(_ADVANCE_SEQUENCE, {**key, "sequence": envelope.sequence})
    await _drain_held(conn, key, partners, ctx)
    return Disposition("ack", "rejected", refusal.reason)


async def _answer_again(conn: psycopg.AsyncConnection, ctx: RelayContext, envelope: Envelope) -> None:
    """Answer a copy of an event we recorded with what we recorded (applied, held, awaiting
    approval or the decision since, rejected with its reason), not with `duplicate`: the
    source keeps the newest receipt, and should go on seeing what became of its event."""
    cur = await conn.execute(_RECORDED, {"source": envelope.source, "event_id": envelope.event_id})
    row = await cur.fetchone()
    if row is None:
        return
    outcome, decision, reason, receipt_pending = row
    if receipt_pending:
        return  # our answer has not even left yet; it answers this copy as well
    if decision is not None:
        outcome = "accepted" if decision == "approved" else "rejected"
    if outcome == "rejected":
        reason = reason or "rejected when first received"
    else:
        reason = None
    await _receipt(conn, ctx, envelope, outcome, reason)


async def _drain_held(conn: psycopg.AsyncConnection, key: dict[str, str], partners: dict[str, Partner],
                      ctx: RelayContext) -> None:
    """Apply the held events of one aggregate that are now next in sequence, in order."""
    while True:
        cur = await conn.execute(_TAKE_HELD, key)
        taken = await cur.fetchall()
        if not taken:
            return
        next_event = None
        for _sequence, event_id, subject, raw, passed in taken:
            if passed:
                await conn.execute(_SET_INBOX_OUTCOME, {"source": key["source"], "event_id": event_id,
                                                        "outcome": "duplicate"})
            else:
                next_event = event_id, InboundMessage(subject, bytes(raw))
        if next_event is None:
            return
        event_id, message = next_event
        if not await _apply_held(conn, message, partners, ctx):
            await conn.execute(_SET_INBOX_OUTCOME, {"source": key["source"], "event_id": event_id,
                                                    "outcome": "rejected"})
            return


async def _apply_held(conn: psycopg.AsyncConnection, message: InboundMessage, partners: dict[str, Partner],
                      ctx: RelayContext) -> bool:
    """Returns whether the sequence moved on (and draining may continue): not if the event
    now fails a check, which leaves the gap open for a person (or a resync) to fill."""
    try:
        # Checked again: the partner may have been suspended, or its key replaced, meanwhile.
        envelope, partner = verify_message(message, partners, ctx.tenant_id, ctx.max_bytes)
    except EventRejected as rejection:
        log.warning("held event on %s failed its checks: %s", message.subject, rejection)
        await _quarantine(conn, message, rejection, source=_claimed_source(message.subject))
        return False
    key = _aggregate_key(envelope)
    try:
        async with conn.transaction():
            result = await apply_order_event(conn, envelope, partner)
        outcome, reason = result.outcome, result.detail or None
    except TRANSIENT_ERRORS:
        raise
    except (ApplyRefused, psycopg.Error) as error:
        refusal = error if isinstance(error, ApplyRefused) else ApplyRefused("apply.refused", _first_line(error))
        await _quarantine(conn, message, refusal, source=envelope.source, event_id=str(envelope.event_id))
        outcome, reason = "rejected", f"{refusal.reason}: {refusal.detail}"
    await conn.execute(_ADVANCE_SEQUENCE, {**key, "sequence": envelope.sequence})
    await _set_inbox_outcome(conn, envelope, outcome)
    await _receipt(conn, ctx, envelope, outcome, reason)
    return True


# -- helpers --------------------------------------------------------------------------------------


def _aggregate_key(envelope: Envelope) -> dict[str, str]:
    return {"source": envelope.source, "aggregate_type": envelope.aggregate_type,
            "aggregate_id": envelope.aggregate_id}


def _inbox_fields(envelope: Envelope) -> dict[str, object]:
    return {"event_id": envelope.event_id, "event_type": envelope.type, "sequence": envelope.sequence,
            "actor": f"b2b:{envelope.source}"}


async def _set_inbox_outcome(conn: psycopg.AsyncConnection, envelope: Envelope, outcome: str) -> None:
    await conn.execute(_SET_INBOX_OUTCOME, {"source": envelope.source, "event_id": envelope.event_id,
                                            "outcome": outcome})


async def _receipt(conn: psycopg.AsyncConnection, ctx: RelayContext, envelope: Envelope, outcome: str,
                   reason: str | None) -> None:
    await enqueue_receipt(conn, signing_key=ctx.signing_key, tenant_id=ctx.tenant_id, answering=envelope,
                          outcome=outcome, reason=reason, max_bytes=ctx.max_bytes)  # type: ignore[arg-type]


async def _quarantine(conn: psycopg.AsyncConnection, message: InboundMessage, rejection: EventRejected, *,
                      source: str | None, event_id: str | None = None) -> None:
    await conn.execute(_QUARANTINE, {"source": source, "event_id": event_id, "subject": message.subject,
                                     "raw": message.data, "reason": rejection.reason,
                                     "detail": rejection.detail[:4000]})


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- the broker side ------------------------------------------------------------------------------


# Messages checked ahead (decoded, verified, payloads checked) between two turns of the event
# loop (about 1.5 ms of work here).
_CHECK_SLICE = 10


def redelivery_delay(num_delivered: int, cap: float = 30.0) -> float:
    """How long the broker should wait before redelivering after a transient failure."""
    return min(cap, 2.0 ** max(0, num_delivered - 1))


class Relay:
    """Pulls from one durable consumer per module and applies batch by batch; beside them, asks
    sources to replay gaps that stay open longer than `resync_after` seconds (resync.py).

    Per consumer, the next batch is fetched and checked (signatures: the relay's largest CPU
    cost) while the current one is in its transaction, so that this process's CPU work and the
    database's overlap; batches are still applied one after the other, in order.

    Runs until cancelled or `stop` is set (between batches; a batch already fetched is applied
    first); a broker error (connection closed) ends it with that error, for the sidecar to
    reconnect."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        ctx: RelayContext,
        *,
        status: RelayStatus | None = None,
        batch_size: int = 250,
        fetch_timeout: float = 1.0,
        backoff: Backoff | None = None,
        modules: Sequence[str] = MODULES,
        resync_after: float = 30.0,
    ):
        self.pool = pool
        self.ctx = ctx
        self.status = status or RelayStatus()
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.modules = tuple(modules)
        self.resync_after = resync_after
        # The registry as the last batch's transaction read it, to check the next batch ahead.
        self._partners: dict[str, Partner] | None = None

    async def run(self, js: JetStreamContext, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self.status.caught_up.clear()  # a new connection: whatever waits in the streams is unread
        subscriptions = []
        for module in self.modules:
            spec = consumer_spec(self.ctx.tenant_id, module)
            subscriptions.append(await js.pull_subscribe(spec.config.filter_subject, durable=spec.durable,
                                                         stream=spec.stream, config=spec.config))
        self.status.move("running")
        async with asyncio.TaskGroup() as group:
            for module, subscription in zip(self.modules, subscriptions, strict=True):
                group.create_task(self._consume(module, subscription, stop))
            group.create_task(self._watch_gaps(stop))

    async def _watch_gaps(self, stop: asyncio.Event) -> None:
        interval = max(0.1, min(self.resync_after / 2, 30.0))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                async with self.pool.connection() as conn:
                    async with conn.transaction():
                        await request_resyncs(conn, tenant_id=self.ctx.tenant_id, signing_key=self.ctx.signing_key,
                                              after_seconds=self.resync_after, max_bytes=self.ctx.max_bytes)
            except TRANSIENT_ERRORS as error:
                log.debug("gap check skipped: %s", _first_line(error))  # the consumers report outages

    async def _consume(self, module: str, subscription: JetStreamContext.PullSubscription,
                       stop: asyncio.Event) -> None:
        ahead = asyncio.create_task(self._fetch(subscription))
        try:
            while True:
                fetched = await ahead
                last = stop.is_set()
                if not last:
                    ahead = asyncio.create_task(self._fetch(subscription))
                if fetched is None:
                    self.status.caught_up.add(module)  # idle
                else:
                    messages, checked = fetched
                    if await self.handle(messages, checked) is not None and len(messages) < self.batch_size:
                        self.status.caught_up.add(module)  # the backlog is drained
                if last:
                    return
        finally:
            if not ahead.done():
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ahead

    async def _fetch(self, subscription: JetStreamContext.PullSubscription
                     ) -> tuple[list[Msg], CheckedAhead | None] | None:
        """The next batch, checked ahead when the registry is known; None when idle."""
        try:
            messages = await subscription.fetch(self.batch_size, timeout=self.fetch_timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            # nats-py raises its own TimeoutError, or asyncio's when the deadline runs out
            # between its two pull requests.
            return None
        partners = self._partners
        if partners is None:
            return messages, None
        inbound = [InboundMessage(m.subject, m.data) for m in messages]
        verified: dict[int, Inbound] = {}
        for start in range(0, len(inbound), _CHECK_SLICE):
            verified.update(check_messages(inbound[start:start + _CHECK_SLICE], partners, self.ctx, start,
                                           ahead=True))
            await asyncio.sleep(0)  # the batch in its transaction sends its next statement meanwhile
        return messages, CheckedAhead(partners, verified)

    async def handle(self, messages: Sequence[Msg], checked: CheckedAhead | None = None) -> list[Disposition] | None:
        """Apply one fetched batch and answer the broker for each message; None if the
        database was unavailable and every message was nak'ed."""
        inbound = [InboundMessage(m.subject, m.data) for m in messages]
        try:
            async with self.pool.connection() as conn:
                async with conn.transaction():
                    partners = await load_partners(conn)
                    dispositions = await apply_inbound_batch(conn, inbound, self.ctx, partners=partners,
                                                             checked=checked)
                self._partners = partners
        except TRANSIENT_ERRORS as error:
            self.status.move("database_unavailable", _first_line(error))
            for message in messages:
                await message.nak(delay=redelivery_delay(message.metadata.num_delivered))
            await asyncio.sleep(self.backoff.next_delay())
            return None
        self.backoff.reset()
        # Only now, after the commit: a crash before this line redelivers, and the inbox makes
        # the second delivery a duplicate.
        for message, disposition in zip(messages, dispositions, strict=True):
            await (message.term() if disposition.verb == "term" else message.ack())
            self.status.outcomes[disposition.outcome] += 1
        self.status.move("running")
        return dispositions
