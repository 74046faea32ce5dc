"""The relay's fast pass: the common case of a fetched batch in a handful of statements.

The per-message path (relay.py) costs about ten statements per order event, and on a small
machine the Python around each statement, not the server, is what limits the relay. Most
batches are nothing but the common case: new events, each next in its order's sequence, from
a partner whose documents need no person, for orders that follow without conflict; and
receipts for events we sent. For those, the fast pass reads everything a group of events
needs in one round trip, decides in Python what the per-message path would decide, and writes
with one statement per kind of row: about three round trips per group instead of six per event.

A group is the events of one source and module in the batch (different sources never share an
aggregate, so groups are independent; one source sets the audit actor for all its rows). The
pass gives up on a group at the first thing outside the common case: a message that fails a
check, a duplicate, an event ahead of its predecessors or with held ones behind it, an
approval, an unmapped SKU, a party or warehouse to find or create, changed lines or currency,
a state our order cannot follow, a state hash that differs, a receipt that does not mark its
row, any database error. The group is then rolled back to its savepoint and left to the
per-message path, which records exactly what it always did: the fast pass never decides
anything itself that the per-message path would decide otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import uuid4

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from yggdrasil.broker.subjects import event_subject
from yggdrasil.events.catalogue import OrderPayload, ReceiptItem, order_state_hash
from yggdrasil.events.envelope import Envelope
from yggdrasil.events.errors import EventRejected
from yggdrasil.federation.errors import ApplyRefused
from yggdrasil.federation.orders import (
    SIDES,
    Side,
    _Line,
    _line_arrays,
    _next_state,
    _Ours,
    _ours,
    check_order_payload,
    lookup_targets,
)
from yggdrasil.federation.partners import Partner
from yggdrasil.federation.receipts import RECEIPT_AGGREGATE, ReceiptBundler, SignedBundle, bundle_items
from yggdrasil.tenant.domain.orders import state_columns

log = logging.getLogger(__name__)


class NotSimple(Exception):
    """This group is not the common case; the per-message path takes it."""


@dataclass(frozen=True)
class Inbound:
    index: int                # position in the fetched batch
    envelope: Envelope
    partner: Partner
    # For an order event, its checked payload, when the relay checked it ahead of the transaction.
    payload: OrderPayload | None = None


def ahead_of_transaction(item: Inbound) -> Inbound:
    """`item` with its payload checked, if it is an order event whose payload passes;
    otherwise as it is (the fast pass finds the problem again)."""
    if item.envelope.module not in SIDES:
        return item
    try:
        payload = check_order_payload(item.envelope)
    except (ApplyRefused, EventRejected):
        return item
    return replace(item, payload=payload)


# -- SQL shared by both kinds of group ------------------------------------------------------------
#
# Arrays are sent in binary (`%(name)b`): in text form, a bytea[] of 250 receipts cost 16 µs per
# element to quote here and parse on the server, against 1.6 in binary; the other arrays less,
# but all of them something.

_SET_ACTOR = "SELECT set_config('ygg.actor', %s, true)"
_SAVEPOINT = "SAVEPOINT ygg_common_case"
_RELEASE = "RELEASE SAVEPOINT ygg_common_case"

_INSERT_INBOX = """
    INSERT INTO b2b_inbox (source_tenant, event_id, event_type, aggregate_type, aggregate_id, sequence,
                           outcome, applied_at)
    SELECT %(source)s, e.event_id, e.event_type, e.aggregate_type, e.aggregate_id, e.sequence, 'applied', now()
      FROM unnest(%(event_ids)b::uuid[], %(event_types)b::text[], %(aggregate_types)b::text[],
                  %(aggregate_ids)b::text[], %(sequences)b::bigint[])
           AS e(event_id, event_type, aggregate_type, aggregate_id, sequence)
    ON CONFLICT (source_tenant, event_id) DO NOTHING
    RETURNING 1
"""

# The aggregates' counters, locked in one order (no deadlock with another relay transaction),
# with whether anything is held for each.
_LOCK_SEQUENCES = """
    INSERT INTO b2b_inbound_sequences AS s (source_tenant, aggregate_type, aggregate_id, last_sequence)
    SELECT %(source)s, a.aggregate_type, a.aggregate_id, 0
      FROM unnest(%(aggregate_types)b::text[], %(aggregate_ids)b::text[]) AS a(aggregate_type, aggregate_id)
     ORDER BY 2, 3
    ON CONFLICT (source_tenant, aggregate_type, aggregate_id) DO UPDATE SET last_sequence = s.last_sequence
    RETURNING s.aggregate_type, s.aggregate_id, s.last_sequence,
              EXISTS (SELECT 1 FROM b2b_held_events h
                       WHERE h.source_tenant = s.source_tenant AND h.aggregate_type = s.aggregate_type
                         AND h.aggregate_id = s.aggregate_id) AS has_held
"""

# Every counter exists (locked above), so each row conflicts and is updated. Written as an
# upsert, each finds its row through the primary key; as an UPDATE ... FROM unnest(), with
# statistics taken while the table was small, the planner hashed all of the source's counters
# for every batch.
_ADVANCE_SEQUENCES = """
    INSERT INTO b2b_inbound_sequences AS s (source_tenant, aggregate_type, aggregate_id, last_sequence)
    SELECT %(source)s, a.aggregate_type, a.aggregate_id, a.sequence
      FROM unnest(%(aggregate_types)b::text[], %(aggregate_ids)b::text[], %(sequences)b::bigint[])
           AS a(aggregate_type, aggregate_id, sequence)
    ON CONFLICT (source_tenant, aggregate_type, aggregate_id)
    DO UPDATE SET last_sequence = greatest(s.last_sequence, excluded.last_sequence), updated_at = now()
"""

# Receipts: each answers one event, its own aggregate (receipts.py), numbered per event. The
# fast pass sends only first receipts: a counter that exists already is a conflict, an error.
_FIRST_RECEIPT_SEQUENCES = """
    INSERT INTO b2b_order_sequences (aggregate_type, aggregate_id, dest_tenant, last_sequence)
    SELECT %(aggregate_type)s, a.aggregate_id, %(dest)s, 1
      FROM unnest(%(aggregate_ids)b::text[]) AS a(aggregate_id)
"""

_INSERT_EVENTS = """
    INSERT INTO b2b_events (event_id, event_type, module, source_tenant, dest_tenant, aggregate_type,
                            aggregate_id, sequence, subject, envelope)
    SELECT e.event_id, e.event_type, e.module, %(source)s, %(dest)s, e.aggregate_type, e.aggregate_id,
           e.sequence, e.subject, e.envelope
      FROM unnest(%(event_ids)b::uuid[], %(event_types)b::text[], %(modules)b::text[], %(aggregate_types)b::text[],
                  %(aggregate_ids)b::text[], %(sequences)b::bigint[], %(subjects)b::text[], %(envelopes)b::bytea[])
           AS e(event_id, event_type, module, aggregate_type, aggregate_id, sequence, subject, envelope)
"""

# A receipt marks the row of the event it answers, unless a newer receipt already did (receipts.py).
# The outbox rows are found by their event ids (`= ANY` on the unique index). Joined on the ids
# alone, with statistics taken before the outbox grew, the planner read every row ever sent to
# the destination for each batch of receipts (12 ms a batch at 5,000 rows, and growing); now at
# worst it also scans the destination's entries of an index, without visiting their rows.
_MARK_RECEIPTS = """
    UPDATE b2b_events e
       SET status = CASE WHEN r.outcome = 'rejected' THEN 'rejected' ELSE 'acknowledged' END,
           acknowledged_at = now(), receipt_outcome = r.outcome, receipt_reason = r.reason,
           receipt_sequence = r.sequence
      FROM unnest(%(event_ids)b::uuid[], %(outcomes)b::text[], %(reasons)b::text[], %(sequences)b::bigint[])
           AS r(event_id, outcome, reason, sequence)
     WHERE e.event_id = ANY(%(event_ids)b::uuid[]) AND e.event_id = r.event_id AND e.dest_tenant = %(source)s
       AND (e.receipt_sequence IS NULL OR e.receipt_sequence < r.sequence)
    RETURNING 1
"""


class _OrderQueries:
    """The fast pass's statements for one kind of order (purchase orders for a seller's events,
    sales orders for a buyer's), composed once."""

    def __init__(self, side: Side):
        t = side.tables
        header, lines = sql.Identifier(t.header), sql.Identifier(t.lines)
        # Each order looked up (and locked) by its key, in the sorted order of the ids: as one
        # `= ANY` filter, with statistics taken while the table was small, the planner read all
        # of the source's orders for every batch.
        self.lock = sql.SQL("""
            SELECT o.id, o.b2b_source_order_id AS order_id, o.state, o.currency,
                   o.b2b_source_state AS partner_state, NULL AS partner_order_id,
                   (SELECT coalesce(jsonb_agg(jsonb_build_array(l.line_no, l.item_id, l.quantity::text,
                                                                l.unit_price::text, l.b2b_source_sku, i.sku)
                                              ORDER BY l.line_no), '[]'::jsonb)
                      FROM {lines} l JOIN items i ON i.id = l.item_id WHERE l.order_id = o.id) AS lines
              FROM unnest(%(order_ids)b::text[]) AS k(order_id)
             CROSS JOIN LATERAL (
                   SELECT * FROM {header} x
                    WHERE x.b2b_source_tenant = %(source)s AND x.b2b_source_order_id = k.order_id
                      FOR UPDATE) AS o
             ORDER BY o.id
            """).format(header=header, lines=lines).as_string(None)
        self.lookup = sql.SQL("""
            SELECT EXISTS (SELECT 1 FROM b2b_approvals
                            WHERE source_tenant = %(source)s AND aggregate_id = ANY(%(order_ids)b::text[])
                              AND state = 'pending') AS approval_pending,
                   {targets}
            """).format(targets=lookup_targets(t)).as_string(None)
        # As the per-message path creates one (orders.py): a draft, its lines in the same statement.
        self.create = sql.SQL("""
            WITH header AS (
                INSERT INTO {header} ({party_col}, warehouse_id, currency, reference, b2b_source_tenant,
                                      b2b_source_order_id, b2b_source_state)
                SELECT %(party_id)s, %(warehouse_id)s, o.currency, o.order_id, %(source)s, o.order_id, 'draft'
                  FROM unnest(%(order_ids)b::text[], %(currencies)b::text[]) WITH ORDINALITY AS o(order_id, currency, n)
                 ORDER BY o.n
                RETURNING id, b2b_source_order_id
            ), new_lines AS (
                INSERT INTO {lines} (order_id, line_no, item_id, quantity, unit_price, b2b_source_sku)
                SELECT header.id, l.line_no, l.item_id, l.quantity, l.unit_price, l.source_sku
                  FROM unnest(%(line_order_ids)b::text[], %(line_nos)b::int[], %(item_ids)b::bigint[],
                              %(quantities)b::numeric[], %(unit_prices)b::numeric[], %(source_skus)b::text[])
                       AS l(order_id, line_no, item_id, quantity, unit_price, source_sku)
                  JOIN header ON header.b2b_source_order_id = l.order_id
            )
            SELECT count(*) FROM header
            """).format(header=header, lines=lines, party_col=sql.Identifier(t.party)).as_string(None)
        stamps = sql.SQL(", ").join(
            sql.SQL("{c} = CASE WHEN m.state = {s} THEN coalesce(o.{c}, now()) ELSE o.{c} END").format(
                c=sql.Identifier(column), s=sql.Literal(state))
            for state, column in state_columns(t.order_type).items())
        # One move per order per statement: an order moved twice in a batch takes two, so the
        # audit trail shows each step.
        self.move = sql.SQL("""
            UPDATE {header} o
               SET state = m.state, b2b_source_state = m.partner_state, {stamps},
                   updated_at = now(), version = o.version + 1
              FROM unnest(%(order_ids)b::text[], %(states)b::text[], %(partner_states)b::text[])
                   AS m(order_id, state, partner_state)
             WHERE o.b2b_source_tenant = %(source)s AND o.b2b_source_order_id = m.order_id
            """).format(header=header, stamps=stamps).as_string(None)


_ORDER_QUERIES = {module: _OrderQueries(side) for module, side in SIDES.items()}


# -- the pass ---------------------------------------------------------------------------------------


async def apply_common_case(conn: psycopg.AsyncConnection, inbound: Sequence[Inbound], *, tenant_id: str,
                            signing_key: Any, max_bytes: int) -> set[int]:
    """Apply what is the common case among `inbound` (verified events, in batch order), in the
    caller's transaction and not in pipeline mode; return the batch indexes it applied (each
    `applied`). Raises only a transient database error (the caller's batch then rolls back)."""
    groups: dict[tuple[str, str], list[Inbound]] = {}
    for item in inbound:
        groups.setdefault((item.envelope.source, item.envelope.module), []).append(item)
    applied: set[int] = set()
    for (source, module), group in groups.items():
        try:
            if module in SIDES:
                await _apply_order_group(conn, SIDES[module], group, tenant_id, signing_key, max_bytes)
            elif all(item.envelope.type in ("b2b.receipt", "b2b.receipts") for item in group):
                await _apply_receipt_group(conn, group)
            else:
                raise _Declined(savepoint=False) from NotSimple(f"{module} events other than receipts")
        except _Declined as declined:
            log.debug("%d %s events from %s take the per-message path: %s", len(group), module, source,
                      declined.__cause__)
            if declined.savepoint:
                await _roll_back(conn)
            continue
        applied.update(item.index for item in group)
    return applied


class _Declined(Exception):
    """The group was not applied; `savepoint`: whether it must be rolled back to its savepoint."""

    def __init__(self, savepoint: bool):
        self.savepoint = savepoint


@contextlib.asynccontextmanager
async def _declining(savepoint: bool) -> AsyncIterator[None]:
    """Turn anything but a transient database error into _Declined: the per-message path then
    records every event of the group, whatever went wrong here."""
    from yggdrasil.federation.relay import TRANSIENT_ERRORS  # the relay owns the classification

    try:
        yield
    except TRANSIENT_ERRORS:
        raise
    except (NotSimple, ApplyRefused, EventRejected, psycopg.Error) as reason:
        raise _Declined(savepoint) from reason
    except Exception as error:  # a bug of ours
        log.exception("the fast pass failed")
        raise _Declined(savepoint) from error


async def _roll_back(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("ROLLBACK TO SAVEPOINT ygg_common_case")
    await conn.execute(_RELEASE)


@dataclass
class _Plan:
    """What an order group writes, decided in Python from what was read."""

    creates: list[tuple[str, str, list[_Line]]]             # order id, currency, lines
    moves: list[list[tuple[str, str, str]]]                 # per round: order id, state, partner state


async def _apply_order_group(conn: psycopg.AsyncConnection, side: Side, group: list[Inbound], tenant_id: str,
                             signing_key: Any, max_bytes: int) -> None:
    """Two round trips: read (savepoint, inbox rows, counters, orders, lookups), then write
    (orders, moves, counters, receipts, release)."""
    envelopes = [item.envelope for item in group]
    source, partner = envelopes[0].source, group[0].partner
    async with _declining(savepoint=False):
        payloads = [item.payload if item.payload is not None else check_order_payload(item.envelope)
                    for item in group]
        if any(payload.counterpart_order_id is not None for payload in payloads):
            raise NotSimple("an event for an order we raised")
        # Signed before anything is sent: the write round trip carries them.
        receipts = applied_receipts(envelopes)
        bundles = ReceiptBundler(tenant_id, signing_key, max_bytes).sign(source, receipts)
    order_ids = sorted({envelope.aggregate_id for envelope in envelopes})
    aggregates = sorted({(envelope.aggregate_type, envelope.aggregate_id) for envelope in envelopes})
    q = _ORDER_QUERIES[side.module]
    key = {"source": source, "order_ids": order_ids}
    async with _declining(savepoint=True), conn.pipeline():
        await conn.execute(_SAVEPOINT)
        await conn.execute(_SET_ACTOR, (f"b2b:{source}",))
        inbox = await conn.execute(_INSERT_INBOX, {"source": source, **_inbox_arrays(envelopes)})
        sequences = await conn.execute(_LOCK_SEQUENCES, {"source": source, **_aggregate_arrays(aggregates)})
        orders = conn.cursor(row_factory=dict_row)
        await orders.execute(q.lock, key)
        lookup = conn.cursor(row_factory=dict_row)
        await lookup.execute(q.lookup, {**key, "skus": sorted({line.sku for p in payloads for line in p.lines})})
        if len(await inbox.fetchall()) != len(envelopes):
            raise NotSimple("an event recorded before")
        last = {(t, i): (seq, held) for t, i, seq, held in await sequences.fetchall()}
        ours = {row["order_id"]: _ours(row) for row in await orders.fetchall()}
        found = await lookup.fetchone()
        assert found is not None
        plan = _plan_order_group(side, partner, envelopes, payloads, last, ours, found)

        if plan.creates:
            await conn.execute(q.create, {
                "source": source, "party_id": found["party_id"], "warehouse_id": found["warehouse_id"],
                "order_ids": [order_id for order_id, _, _ in plan.creates],
                "currencies": [currency for _, currency, _ in plan.creates],
                **_lines_of_orders([(order_id, line) for order_id, _, lines in plan.creates for line in lines]),
            })
        for moves in plan.moves:
            await conn.execute(q.move, {"source": source, "order_ids": [m[0] for m in moves],
                                        "states": [m[1] for m in moves], "partner_states": [m[2] for m in moves]})
        # One row per aggregate: an UPDATE ... FROM takes one arbitrary match per target row.
        await conn.execute(_ADVANCE_SEQUENCES, {
            "source": source, **_aggregate_arrays(aggregates),
            "sequences": [last[aggregate][0] for aggregate in aggregates]})
        await _enqueue(conn, receipts, bundles, tenant_id, source)
        await conn.execute(_RELEASE)
        # Leaving the pipeline syncs: an error in any write surfaces here, inside _declining.


def _plan_order_group(side: Side, partner: Partner, envelopes: list[Envelope], payloads: list[OrderPayload],
                      last: dict[tuple[str, str], tuple[int, bool]], ours: dict[str, _Ours],
                      found: dict[str, Any]) -> _Plan:
    """Walk the group's events in order, as the per-message path would apply them one by one;
    raise NotSimple at the first that would not simply apply."""
    if found["approval_pending"]:
        raise NotSimple("an approval is pending")
    item_ids: dict[str, int] = found["items"]
    plan = _Plan([], [])
    moves_made: dict[str, int] = {}
    for envelope, payload in zip(envelopes, payloads, strict=True):
        aggregate = (envelope.aggregate_type, envelope.aggregate_id)
        sequence, has_held = last[aggregate]
        if has_held or envelope.sequence != sequence + 1:
            raise NotSimple(f"sequence {envelope.sequence} after {sequence}{' with events held' if has_held else ''}")
        last[aggregate] = (envelope.sequence, False)
        lines = [_Line(line.line_no, item_ids.get(line.sku, 0), line.quantity, line.unit_price, line.sku)
                 for line in sorted(payload.lines, key=lambda line: line.line_no)]
        order = ours.get(payload.order_id)
        if order is None:
            if partner.approval_policy != "auto":
                raise NotSimple("the partner's documents need approval")
            if any(line.sku not in item_ids for line in payload.lines):
                raise NotSimple("an unmapped SKU")
            if found["warehouse_id"] is None or found["party_id"] is None:
                raise NotSimple("no warehouse, or no party linked to the partner")
            plan.creates.append((payload.order_id, payload.currency, lines))
            order = _Ours(0, "draft", payload.currency, "draft", None, lines)
        elif [line.compared for line in order.lines] != [line.compared for line in lines] or (
                payload.currency != order.currency):
            raise NotSimple("the lines or the currency changed")
        notes: list[str] = []
        state = _next_state(side, order, side.source_moves.get(payload.state), payload.state, notes)
        if notes:
            raise NotSimple("; ".join(notes))
        if (state, payload.state) != (order.state, order.partner_state):
            step = moves_made.get(payload.order_id, 0)
            moves_made[payload.order_id] = step + 1
            if step == len(plan.moves):
                plan.moves.append([])
            plan.moves[step].append((payload.order_id, state, payload.state))
        actual = order_state_hash(order_id=payload.order_id, currency=order.currency, state=payload.state,
                                  lines=[line.hashed for line in order.lines])
        if envelope.state_hash is not None and envelope.state_hash != actual:
            raise NotSimple("the state hash differs")
        ours[payload.order_id] = replace(order, state=state, partner_state=payload.state)
    return plan


async def _apply_receipt_group(conn: psycopg.AsyncConnection, group: list[Inbound]) -> None:
    """Receipts, alone or in bundles. Two round trips: savepoint, inbox rows (one per receipt,
    and one per bundle) and marks; then release."""
    envelopes = [item.envelope for item in group]
    source = envelopes[0].source
    async with _declining(savepoint=False):
        receipts = [receipt for envelope in envelopes for receipt in bundle_items(envelope)]
        if len({receipt.event_id for receipt in receipts}) != len(receipts):
            raise NotSimple("two receipts for one event")  # one UPDATE marks a row once
        bundles = [envelope for envelope in envelopes if envelope.type == "b2b.receipts"]
        inbox_rows = {"event_ids": [r.receipt_id for r in receipts] + [b.event_id for b in bundles],
                      "event_types": ["b2b.receipt"] * len(receipts) + [b.type for b in bundles],
                      "aggregate_types": [RECEIPT_AGGREGATE] * len(receipts) + [b.aggregate_type for b in bundles],
                      "aggregate_ids": [str(r.event_id) for r in receipts] + [b.aggregate_id for b in bundles],
                      "sequences": [r.sequence for r in receipts] + [b.sequence for b in bundles]}
    async with _declining(savepoint=True), conn.pipeline():
        await conn.execute(_SAVEPOINT)
        await conn.execute(_SET_ACTOR, (f"b2b:{source}",))
        inbox = await conn.execute(_INSERT_INBOX, {"source": source, **inbox_rows})
        marked = await conn.execute(_MARK_RECEIPTS, {
            "source": source, "event_ids": [r.event_id for r in receipts],
            "outcomes": [r.outcome for r in receipts], "reasons": [r.reason for r in receipts],
            "sequences": [r.sequence for r in receipts]})
        if len(await inbox.fetchall()) != len(inbox_rows["event_ids"]):
            raise NotSimple("a receipt recorded before")
        if len(await marked.fetchall()) != len(receipts):
            raise NotSimple("a receipt older than the one recorded, or for an event we did not send")
        await conn.execute(_RELEASE)


def applied_receipts(answering: Sequence[Envelope]) -> list[ReceiptItem]:
    """Our `applied` receipts for events the fast pass applies, as bundle items. Each is the
    first receipt of its event (the fast pass applies only events whose inbox rows are new: we
    never answered them), so its number is 1; should a counter exist after all, inserting it
    fails and the group takes the per-message path."""
    return [ReceiptItem(receipt_id=uuid4(), event_id=envelope.event_id, outcome="applied", sequence=1)
            for envelope in answering]


async def _enqueue(conn: psycopg.AsyncConnection, receipts: list[ReceiptItem], bundles: list[SignedBundle],
                   tenant_id: str, dest: str) -> None:
    """Into our outbox: the receipts' counters (first receipts: 1), and the receipts themselves
    as the signed bundles they travel in, a row each (receipts.py): one signature and one row
    for the group, where a row per receipt cost each event a signature, a row written twice and
    the publisher's bundling."""
    await conn.execute(_FIRST_RECEIPT_SEQUENCES, {"aggregate_type": RECEIPT_AGGREGATE, "dest": dest,
                                                  "aggregate_ids": [str(r.event_id) for r in receipts]})
    subject = event_subject("b2b", dest, tenant_id)
    envelopes = [bundle.envelope for bundle in bundles]
    await conn.execute(_INSERT_EVENTS, {
        "source": tenant_id, "dest": dest, "event_ids": [e.event_id for e in envelopes],
        "event_types": [e.type for e in envelopes], "modules": [e.module for e in envelopes],
        "aggregate_types": [e.aggregate_type for e in envelopes],
        "aggregate_ids": [e.aggregate_id for e in envelopes], "sequences": [e.sequence for e in envelopes],
        "subjects": [subject] * len(envelopes), "envelopes": [bundle.data for bundle in bundles]})


def _inbox_arrays(envelopes: list[Envelope]) -> dict[str, list[Any]]:
    return {"event_ids": [e.event_id for e in envelopes], "event_types": [e.type for e in envelopes],
            "aggregate_types": [e.aggregate_type for e in envelopes],
            "aggregate_ids": [e.aggregate_id for e in envelopes], "sequences": [e.sequence for e in envelopes]}


def _aggregate_arrays(aggregates: list[tuple[str, str]]) -> dict[str, list[str]]:
    return {"aggregate_types": [t for t, _ in aggregates], "aggregate_ids": [i for _, i in aggregates]}


def _lines_of_orders(lines: list[tuple[str, _Line]]) -> dict[str, list[Any]]:
    """The lines of several orders as arrays, each naming its order."""
    return {"line_order_ids": [order_id for order_id, _ in lines], **_line_arrays([line for _, line in lines])}
