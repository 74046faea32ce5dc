"""A partner's order events, applied to our orders.

Every order event carries the whole order as it stands after the change (events/catalogue.py),
so applying one means "make our order reflect this". Both directions have one shape:

  * `sales.order.*` come from a seller: its sales order is our purchase order;
  * `purchasing.order.*` come from a buyer: its purchase order is our sales order.

An event concerns either an order the partner raised (we keep it as an order *from* that
source) or an order we raised that the partner keeps as its own (the event names ours in the
payload's `counterpart_order_id`):

  * from the source: our order is created as a draft on first sight, with
    `b2b_source_tenant`, `b2b_source_order_id` and the partner's SKU on each line
    (`b2b_source_sku`), then moved with UPDATEs, so the audit trail shows each step even when
    several are applied at once. Its lines and currency follow the partner's while it is a
    draft; `b2b_source_state` records the partner's state as last applied;
  * to our own order: found by id among the orders of the partner's supplier or customer that
    did not come from a partner. Its lines are ours and stay as they are;
    `b2b_counterpart_order_id` and `b2b_counterpart_state` record the partner's order.

How our order's state follows the partner's (any other partner state is only recorded):

    seller's sales order -> our purchase order (from the seller, or our own):
        confirmed -> confirmed; shipped -> confirmed (the goods are on their way: our order
        stays confirmed until we receive them); cancelled -> cancelled
    buyer's purchase order -> our sales order from it:  cancelled -> cancelled
    buyer's purchase order -> our own sales order:       nothing moves (the buyer reports receipt)

What we cannot follow is settled by who owns the document. A seller's sales order is the
seller's: the buyer records the seller's facts (shipped, new lines) even where its own order
can no longer follow them, and the difference is recorded as a divergence. A buyer's purchase
order is a request to us: once our sales order has moved on, a change we can no longer make
(other lines or currency after we confirmed, a cancellation after we shipped) is refused
(`ApplyRefused`), and the buyer reads the reason on its outbox row.

Documents that need a person go to `b2b_approvals` instead of creating anything: the partner's
policy is `approve`, a line names a SKU without a mapping in `b2b_partner_items`, or we have no
warehouse. While one is pending, later events of the same order update it.

The supplier (customer) is the active one whose `partner_tenant_id` is the source. If there is
none, one is created (code `b2b:<tenant>`), audited like any other write: registering the
partner (`ygg partner add`) is the decision to trade with it, and the party row is only the
bookkeeping that decision implies. Quarantining every first order from a new partner instead
would turn a routine setup step into an incident.

After applying, our view of the partner's order is hashed as the source hashed its order
(`events.catalogue.order_state_hash`) and compared with the event's `state_hash`. A difference,
or a change we could not follow, is a `b2b_divergences` row and a warning; the event is still
applied as far as it could be, and answered so.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from yggdrasil.events.catalogue import OrderPayload, order_state_hash, payload_state_hash
from yggdrasil.events.envelope import Envelope
from yggdrasil.federation.errors import ApplyRefused
from yggdrasil.federation.partners import Partner
from yggdrasil.tenant.adapters.orders import PURCHASES, SALES, OrderTables
from yggdrasil.tenant.domain.orders import state_columns
from yggdrasil.tenant.domain.purchasing import STATES as PURCHASE_STATES
from yggdrasil.tenant.domain.sales import STATES as SALES_STATES

log = logging.getLogger(__name__)

SELLER_STATES = SALES_STATES
BUYER_STATES = PURCHASE_STATES
# The partner's state -> the state our order should be in; absent: ours stays where it is.
PURCHASE_STATE_FOR = {"draft": "draft", "confirmed": "confirmed", "shipped": "confirmed", "cancelled": "cancelled"}
SALES_STATE_FOR = {"cancelled": "cancelled"}
# What our columns hold: numeric(14,3) quantities, numeric(14,4) prices.
QUANTITY_PLACES, PRICE_PLACES = 3, 4


@dataclass(frozen=True)
class Side:
    """How one module's order events map onto our orders."""

    module: str                          # the events' module
    partner_role: str                    # "seller" / "buyer": in messages
    tables: OrderTables                  # our orders they become
    partner_states: tuple[str, ...]      # the states the partner's order can be in
    source_moves: Mapping[str, str]      # for an order from the partner
    own_moves: Mapping[str, str]         # for an order we raised
    refuses: bool                        # refuse what we cannot follow (else: record it)

    @property
    def kind(self) -> str:
        return self.tables.order_type.KIND


SIDES = {
    "sales": Side("sales", "seller", PURCHASES, SELLER_STATES, PURCHASE_STATE_FOR, PURCHASE_STATE_FOR, refuses=False),
    "purchasing": Side("purchasing", "buyer", SALES, BUYER_STATES, SALES_STATE_FOR, {}, refuses=True),
}


@dataclass(frozen=True)
class OrderApplied:
    outcome: Literal["applied", "awaiting_approval"]
    order_id: int | None = None          # ours: a purchase order for a seller's event, a sales order for a buyer's
    approval_id: int | None = None
    detail: str = ""
    diverged: bool = False


@dataclass(frozen=True)
class _Line:
    line_no: int
    item_id: int
    quantity: Decimal
    unit_price: Decimal
    source_sku: str | None               # the partner's SKU, for a line created from its document
    own_sku: str = ""                    # our item's SKU (read back; unknown for a line just mapped)

    @property
    def compared(self) -> tuple[int, int, Decimal, Decimal, str | None]:
        return self.line_no, self.item_id, self.quantity, self.unit_price, self.source_sku

    @property
    def hashed(self) -> tuple[int, str, Decimal, Decimal]:
        """As `order_state_hash` names the line: by the SKU of the tenant that raised the order."""
        return self.line_no, self.source_sku or self.own_sku, self.quantity, self.unit_price


@dataclass(frozen=True)
class _Ours:
    """Our order as it stands, locked."""

    id: int
    state: str
    currency: str
    partner_state: str | None
    partner_order_id: str | None         # own orders only: the partner's order id we recorded
    lines: list[_Line]


# -- SQL, composed once per kind of order ------------------------------------------------------

def lookup_targets(t: OrderTables) -> sql.Composed:
    """Select-list items naming what a partner's order becomes ours with: its SKUs' items
    (`items`, partner SKU -> item id, for the SKUs in `%(skus)s`), the party linked to the
    partner (`party_id`) and our warehouse (`warehouse_id`). Also used by the fast pass."""
    return sql.SQL("""
        (SELECT coalesce(jsonb_object_agg(partner_sku, item_id), '{{}}'::jsonb)
           FROM b2b_partner_items
          WHERE partner_tenant_id = %(source)s AND partner_sku = ANY(%(skus)b::text[])) AS items,
        (SELECT id FROM {party} WHERE partner_tenant_id = %(source)s AND active ORDER BY id LIMIT 1) AS party_id,
        (SELECT id FROM warehouses WHERE active ORDER BY id LIMIT 1) AS warehouse_id""").format(
        party=sql.Identifier(t.party_table))


class _Queries:
    def __init__(self, t: OrderTables):
        header, lines, party = sql.Identifier(t.header), sql.Identifier(t.lines), sql.Identifier(t.party_table)
        party_col = sql.Identifier(t.party)
        # Lines as JSON arrays, numbers as text (JSON numbers would come back as floats).
        order_lines = sql.SQL("""
            (SELECT coalesce(jsonb_agg(jsonb_build_array(l.line_no, l.item_id, l.quantity::text, l.unit_price::text,
                                                         l.b2b_source_sku, i.sku) ORDER BY l.line_no), '[]'::jsonb)
               FROM {lines} l JOIN items i ON i.id = l.item_id WHERE l.order_id = o.id) AS lines""").format(lines=lines)

        self.lock_from_source = self._text(sql.SQL("""
            SELECT o.id, o.state, o.currency, o.b2b_source_state AS partner_state, NULL AS partner_order_id, {lines}
              FROM {header} o
             WHERE o.b2b_source_tenant = %(source)s AND o.b2b_source_order_id = %(order_id)s
               FOR UPDATE OF o
            """).format(header=header, lines=order_lines))
        # Only an order of the partner's own supplier (customer), and not one that came from a
        # partner: a partner can name only what it was sent.
        self.lock_own = self._text(sql.SQL("""
            SELECT o.id, o.state, o.currency, o.b2b_counterpart_state AS partner_state,
                   o.b2b_counterpart_order_id AS partner_order_id, {lines}
              FROM {header} o JOIN {party} p ON p.id = o.{party_col}
             WHERE o.id = %(our_id)s AND p.partner_tenant_id = %(source)s AND o.b2b_source_tenant IS NULL
               FOR UPDATE OF o
            """).format(header=header, party=party, party_col=party_col, lines=order_lines))

        self.lookup = self._text(sql.SQL("""
            SELECT (SELECT id FROM b2b_approvals
                     WHERE source_tenant = %(source)s AND aggregate_type = %(aggregate_type)s
                       AND aggregate_id = %(order_id)s AND state = 'pending'
                       FOR UPDATE) AS approval_id,
                   {targets}
            """).format(targets=lookup_targets(t)))

        self.create_party = self._text(sql.SQL("""
            INSERT INTO {party} (code, name, partner_tenant_id, currency)
            VALUES (%(code)s, %(name)s, %(source)s, %(currency)s)
            ON CONFLICT (code) DO NOTHING
            RETURNING id
            """).format(party=party))

        insert_lines = sql.SQL("""
            INSERT INTO {lines} (order_id, line_no, item_id, quantity, unit_price, b2b_source_sku)
            SELECT {order_id}, l.line_no, l.item_id, l.quantity, l.unit_price, l.source_sku
              FROM {source} unnest(%(line_nos)b::int[], %(item_ids)b::bigint[], %(quantities)b::numeric[],
                                   %(unit_prices)b::numeric[], %(source_skus)b::text[])
                   AS l(line_no, item_id, quantity, unit_price, source_sku)
            """)
        # Header and lines in one statement. Always created as a draft: later moves are
        # UPDATEs, so the audit trail shows each transition, even when several are applied at once.
        self.create_order = self._text(sql.SQL("""
            WITH header AS (
                INSERT INTO {header} ({party_col}, warehouse_id, currency, reference, b2b_source_tenant,
                                      b2b_source_order_id, b2b_source_state)
                VALUES (%(party_id)s, %(warehouse_id)s, %(currency)s, %(reference)s, %(source)s, %(order_id)s, 'draft')
                RETURNING id
            ), lines AS ({insert_lines})
            SELECT id FROM header
            """).format(header=header, party_col=party_col, insert_lines=insert_lines.format(
                lines=lines, order_id=sql.SQL("header.id"), source=sql.SQL("header,"))))
        self.delete_lines = self._text(sql.SQL("DELETE FROM {lines} WHERE order_id = %(order_id)s").format(lines=lines))
        self.replace_lines = self._text(insert_lines.format(lines=lines, order_id=sql.Placeholder("order_id"),
                                                            source=sql.SQL("")))

        # Entering a state stamps its column once (confirmed_at, cancelled_at, ...).
        stamps = sql.SQL(", ").join(
            sql.SQL("{c} = CASE WHEN %(state)s::text = {s} THEN coalesce({c}, now()) ELSE {c} END").format(
                c=sql.Identifier(column), s=sql.Literal(state))
            for state, column in state_columns(t.order_type).items())
        self.update_from_source = self._text(sql.SQL("""
            UPDATE {header}
               SET currency = %(currency)s, state = %(state)s::text, b2b_source_state = %(partner_state)s, {stamps},
                   updated_at = now(), version = version + 1
             WHERE id = %(id)s
            """).format(header=header, stamps=stamps))
        self.update_own = self._text(sql.SQL("""
            UPDATE {header}
               SET state = %(state)s::text, b2b_counterpart_order_id = %(partner_order_id)s,
                   b2b_counterpart_state = %(partner_state)s, {stamps}, updated_at = now(), version = version + 1
             WHERE id = %(id)s
            """).format(header=header, stamps=stamps))

    @staticmethod
    def _text(query: sql.Composable) -> str:
        return query.as_string(None)


_QUERIES = {module: _Queries(side.tables) for module, side in SIDES.items()}

_CREATE_APPROVAL = """
    INSERT INTO b2b_approvals (source_tenant, event_id, event_type, aggregate_type, aggregate_id, sequence,
                               payload, waiting_reason, waiting_detail)
    VALUES (%(source)s, %(event_id)s, %(event_type)s, %(aggregate_type)s, %(order_id)s, %(sequence)s,
            %(payload)s, %(reason)s, %(detail)s)
    RETURNING id, waiting_reason
"""

_UPDATE_APPROVAL = """
    UPDATE b2b_approvals
       SET event_id = %(event_id)s, event_type = %(event_type)s, sequence = %(sequence)s, payload = %(payload)s,
           waiting_reason = coalesce(%(reason)s::text, waiting_reason),
           waiting_detail = CASE WHEN %(reason)s::text IS NULL THEN waiting_detail ELSE %(detail)s END,
           updated_at = now()
     WHERE id = %(approval_id)s
    RETURNING id, waiting_reason
"""

_RECORD_DIVERGENCE = """
    INSERT INTO b2b_divergences (source_tenant, aggregate_type, aggregate_id, event_id, event_type, sequence,
                                 order_table, order_id, expected_hash, actual_hash, detail)
    VALUES (%(source)s, %(aggregate_type)s, %(aggregate_id)s, %(event_id)s, %(event_type)s, %(sequence)s,
            %(order_table)s, %(order_id)s, %(expected)s, %(actual)s, %(detail)s)
"""


# -- checks -----------------------------------------------------------------------------------

def check_order_payload(envelope: Envelope) -> OrderPayload:
    """The typed payload, refused (ApplyRefused) if we could not record it faithfully."""
    payload = envelope.typed_payload()
    assert isinstance(payload, OrderPayload)
    side = _side(envelope)
    if payload.order_id != envelope.aggregate_id:
        raise ApplyRefused("order.id_mismatch",
                           f"payload order_id {payload.order_id!r} is not the aggregate {envelope.aggregate_id!r}")
    if payload.state not in side.partner_states:
        raise ApplyRefused("order.state_unknown",
                           f"{side.partner_role} state {payload.state!r} is not one of {side.partner_states}")
    if not payload.lines:
        raise ApplyRefused("order.no_lines", "an order needs at least one line")
    seen: set[int] = set()
    for line in payload.lines:
        problem = None
        if line.line_no in seen:
            problem = "line_no repeated"
        elif not line.quantity > 0:
            problem = "quantity must be greater than 0"
        elif not line.unit_price >= 0:
            problem = "unit_price must not be negative"
        elif _places(line.quantity) > QUANTITY_PLACES or _places(line.unit_price) > PRICE_PLACES:
            problem = f"more than {QUANTITY_PLACES} decimals in quantity or {PRICE_PLACES} in unit_price"
        if problem:
            raise ApplyRefused("order.line_invalid", f"line {line.line_no}: {problem}")
        seen.add(line.line_no)
    return payload


def _side(envelope: Envelope) -> Side:
    side = SIDES.get(envelope.module)
    if side is None:
        raise ApplyRefused("event.not_handled", f"{envelope.type} does not concern an order")
    return side


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


# -- applying ---------------------------------------------------------------------------------

async def apply_order_event(
    conn: psycopg.AsyncConnection,
    envelope: Envelope,
    partner: Partner,
    *,
    approved: bool = False,
) -> OrderApplied:
    """Apply a verified, in-sequence `sales.order.*` or `purchasing.order.*` event to our
    orders, in the caller's transaction. `approved`: a person decided (approvals.py); the
    partner's policy and any pending approval are passed over.

    Raises ApplyRefused for content we cannot record (with `approved`, also for what would
    otherwise wait for approval: unmapped SKUs, no warehouse), or a change to a buyer's
    document that our sales order can no longer follow; psycopg errors from the database."""
    payload = check_order_payload(envelope)
    side = _side(envelope)
    if payload.counterpart_order_id is not None:
        return await _apply_to_own_order(conn, side, envelope, payload)
    return await _apply_from_source(conn, side, envelope, payload, partner, approved)


async def _apply_from_source(
    conn: psycopg.AsyncConnection, side: Side, envelope: Envelope, payload: OrderPayload, partner: Partner,
    approved: bool,
) -> OrderApplied:
    q = _QUERIES[side.module]
    source, order_id = envelope.source, envelope.aggregate_id
    key = {"source": source, "order_id": order_id, "aggregate_type": envelope.aggregate_type}
    # Both sent before either is read: one round trip in pipeline mode (the relay's), two otherwise.
    async with conn.cursor(row_factory=dict_row) as cur, conn.cursor(row_factory=dict_row) as lookup:
        await cur.execute(q.lock_from_source, key)
        await lookup.execute(q.lookup, {**key, "skus": sorted({line.sku for line in payload.lines})})
        row = await cur.fetchone()
        found = await lookup.fetchone()
    assert found is not None
    order = _ours(row) if row is not None else None

    async def wait_for_approval(reason: str | None, detail: str = "") -> OrderApplied:
        if approved:
            # A person approved, but the document still cannot become an order as it stands.
            raise ApplyRefused(reason or "approval.blocked", detail)
        approval_id, reason = await _record_approval(conn, envelope, found["approval_id"], reason, detail)
        return OrderApplied("awaiting_approval", approval_id=approval_id,
                            detail=f"{reason}: {detail}" if detail else reason)

    # A pending approval holds the whole document: until a person decides, it only follows
    # the partner's latest state (and keeps the reason it waits for).
    if found["approval_id"] is not None and not approved:
        return await wait_for_approval(None)

    item_ids: dict[str, int] = found["items"]
    unmapped = sorted({line.sku for line in payload.lines} - set(item_ids))
    lines = [_Line(line.line_no, item_ids.get(line.sku, 0), line.quantity, line.unit_price, line.sku)
             for line in sorted(payload.lines, key=lambda line: line.line_no)]

    if order is None:
        if partner.approval_policy == "approve" and not approved:
            return await wait_for_approval("partner.approval_required", f"{source} requires approval of new orders")
        if unmapped:
            return await wait_for_approval("items.unmapped", f"no item mapped for SKUs {', '.join(unmapped)}")
        if found["warehouse_id"] is None:
            return await wait_for_approval("warehouse.missing", f"no active warehouse for the {side.kind}")
        party_id = found["party_id"] or await _create_party(conn, q, partner, payload.currency)
        if party_id is None:
            party = side.tables.party_table.rstrip("s")
            return await wait_for_approval(f"{party}.missing",
                                           f"no {party} is linked to {source} and code b2b:{source} is taken")
        async with conn.cursor() as cur:
            await cur.execute(q.create_order, {**key, "party_id": party_id, "warehouse_id": found["warehouse_id"],
                                               "currency": payload.currency, "reference": order_id,
                                               **_line_arrays(lines)})
            created = await cur.fetchone()
        assert created is not None
        order = _Ours(created[0], "draft", payload.currency, "draft", None, lines)

    return await _follow_source(conn, side, envelope, payload, order, lines, unmapped, wait_for_approval)


async def _follow_source(
    conn: psycopg.AsyncConnection,
    side: Side,
    envelope: Envelope,
    payload: OrderPayload,
    order: _Ours,
    lines: list[_Line],
    unmapped: list[str],
    wait_for_approval: Callable[..., Awaitable[OrderApplied]],
) -> OrderApplied:
    """Bring an order from the partner in line with the partner's order."""
    state, currency, kept, notes = order.state, order.currency, order.lines, []
    lines_differ = [line.compared for line in order.lines] != [line.compared for line in lines]
    if lines_differ or payload.currency != currency:
        if state == "draft":
            if unmapped:
                return await wait_for_approval("items.unmapped", f"no item mapped for SKUs {', '.join(unmapped)}")
            if lines_differ:
                async with conn.cursor() as cur:
                    await cur.execute(_QUERIES[side.module].delete_lines, {"order_id": order.id})
                    await cur.execute(_QUERIES[side.module].replace_lines,
                                      {"order_id": order.id, **_line_arrays(lines)})
                kept = lines
            currency = payload.currency
        elif side.refuses:
            raise ApplyRefused("order.not_editable",
                               f"{side.kind} {order.id} is {state}; only a draft follows changes to its lines or "
                               f"currency, so this change of the {side.partner_role}'s order was not applied")
        else:
            notes.append(f"lines or currency changed while our order is {state}; not applied")

    state = _next_state(side, order, side.source_moves.get(payload.state), payload.state, notes)
    # Only a real change writes (and so audits) the header; a repeated state writes nothing.
    if kept is not order.lines or (state, currency, payload.state) != (order.state, order.currency,
                                                                       order.partner_state):
        await conn.execute(_QUERIES[side.module].update_from_source,
                           {"id": order.id, "currency": currency, "state": state, "partner_state": payload.state})
    diverged = await _compare(conn, side, envelope, payload, order.id, currency, kept, notes, own=False)
    return OrderApplied("applied", order_id=order.id, detail="; ".join(notes), diverged=diverged)


async def _apply_to_own_order(
    conn: psycopg.AsyncConnection, side: Side, envelope: Envelope, payload: OrderPayload
) -> OrderApplied:
    """The partner's order is its copy of one we raised: move ours along, keep our lines."""
    q = _QUERIES[side.module]
    named = payload.counterpart_order_id or ""
    # Our ids are bigints; anything else names no order of ours.
    our_id = int(named) if named.isdigit() and len(named) <= 18 else None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q.lock_own, {"our_id": our_id, "source": envelope.source})
        row = await cur.fetchone()
    if row is None:
        raise ApplyRefused("order.counterpart_unknown",
                           f"we have no {side.kind} {named!r} with {envelope.source} as its "
                           f"{side.tables.party_table.rstrip('s')}")
    order = _ours(row)
    if order.partner_order_id not in (None, payload.order_id):
        raise ApplyRefused("order.counterpart_taken",
                           f"our {side.kind} {order.id} is {envelope.source}'s order {order.partner_order_id}, "
                           f"not {payload.order_id}")
    notes: list[str] = []
    state = _next_state(side, order, side.own_moves.get(payload.state), payload.state, notes)
    if (state, payload.state, payload.order_id) != (order.state, order.partner_state, order.partner_order_id):
        await conn.execute(q.update_own, {"id": order.id, "state": state, "partner_state": payload.state,
                                          "partner_order_id": payload.order_id})
    diverged = await _compare(conn, side, envelope, payload, order.id, order.currency, order.lines, notes, own=True)
    return OrderApplied("applied", order_id=order.id, detail="; ".join(notes), diverged=diverged)


def _next_state(side: Side, order: _Ours, target: str | None, partner_state: str, notes: list[str]) -> str:
    """The state our order moves to for the partner's, if our transitions allow it; otherwise
    refused (a buyer's document) or noted (a seller's)."""
    if target is None or target == order.state:
        return order.state
    if (order.state, target) in side.tables.order_type.TRANSITIONS:
        return target
    if side.refuses:
        raise ApplyRefused("order.invalid_transition",
                           f"{side.kind} {order.id} is {order.state} and cannot be {target}; "
                           f"the {side.partner_role}'s {partner_state} order was not followed")
    notes.append(f"{side.partner_role} is {partner_state}; our order cannot move from {order.state} to {target}")
    return order.state


# -- divergence -------------------------------------------------------------------------------

async def _compare(
    conn: psycopg.AsyncConnection, side: Side, envelope: Envelope, payload: OrderPayload, order_id: int,
    currency: str, lines: list[_Line], notes: list[str], *, own: bool,
) -> bool:
    """Hash our view of the partner's order after applying the event as its source hashed it,
    and record a divergence if it differs from the event's `state_hash`, or if `notes` say
    what we could not follow. Returns whether one was recorded.

    Our view: the partner's order id and state as we recorded them (both are the payload's
    once applied), our currency, and our lines, each named by the SKU of the tenant that raised
    the order (`_Line.hashed`): the partner's SKU kept with a line created from its document,
    our own for a line of an order we raised. Nothing here costs a round trip unless it
    diverged."""
    actual = order_state_hash(order_id=payload.order_id, currency=currency, state=payload.state,
                              lines=[line.hashed for line in lines])
    expected = envelope.state_hash
    mismatch = expected is not None and expected != actual
    if not mismatch and not notes:
        return False
    detail = "; ".join([*notes, *([_explain(payload, expected, currency, lines, own=own)] if mismatch else [])])
    log.warning("%s %s diverges from %s's order %s after %s (sequence %s, event %s): expected state hash %s, "
                "ours %s: %s", side.kind, order_id, envelope.source, envelope.aggregate_id, envelope.type,
                envelope.sequence, envelope.event_id, expected, actual, detail)
    await conn.execute(_RECORD_DIVERGENCE, {
        "source": envelope.source, "aggregate_type": envelope.aggregate_type, "aggregate_id": envelope.aggregate_id,
        "event_id": envelope.event_id, "event_type": envelope.type, "sequence": envelope.sequence,
        "order_table": side.tables.header, "order_id": order_id, "expected": expected, "actual": actual,
        "detail": detail[:4000],
    })
    return True


def _explain(payload: OrderPayload, expected: str | None, currency: str, lines: list[_Line], *, own: bool) -> str:
    """Where the difference lies, as far as the payload tells."""
    if not own and payload_state_hash(payload) != expected:
        # The partner raised the order, so the payload's SKUs are the ones the hash names.
        return "the event's state_hash does not match its own payload"
    differences = []
    if payload.currency != currency:
        differences.append(f"currency {payload.currency} there, {currency} here")
    theirs = {line.line_no: line for line in payload.lines}
    ours = {line.line_no: line for line in lines}
    for line_no in sorted(theirs.keys() | ours.keys()):
        their, our = theirs.get(line_no), ours.get(line_no)
        if their is None or our is None:
            differences.append(f"line {line_no} only {'here' if their is None else 'there'}")
        elif (their.quantity, their.unit_price) != (our.quantity, our.unit_price) or (
                not own and their.sku != our.source_sku):
            differences.append(f"line {line_no}: {their.sku} {their.quantity} at {their.unit_price} there, "
                               f"{our.source_sku or our.own_sku or our.item_id} {our.quantity} at {our.unit_price} here")
    if not differences:
        # An order we raised comes back under the partner's SKUs, which the hash does not name.
        differences.append("the lines name other items than the partner's order does")
    return "our record differs from the partner's order: " + "; ".join(differences)


# -- helpers ----------------------------------------------------------------------------------

def _ours(row: dict[str, Any]) -> _Ours:
    return _Ours(
        id=row["id"], state=row["state"], currency=row["currency"].strip(), partner_state=row["partner_state"],
        partner_order_id=row["partner_order_id"],
        lines=[_Line(int(no), int(item), Decimal(qty), Decimal(price), source_sku, own_sku or "")
               for no, item, qty, price, source_sku, own_sku in row["lines"]],
    )


def _line_arrays(lines: list[_Line]) -> dict[str, list[Any]]:
    return {"line_nos": [line.line_no for line in lines], "item_ids": [line.item_id for line in lines],
            "quantities": [line.quantity for line in lines], "unit_prices": [line.unit_price for line in lines],
            "source_skus": [line.source_sku for line in lines]}


async def _create_party(conn: psycopg.AsyncConnection, q: _Queries, partner: Partner, currency: str) -> int | None:
    cur = await conn.execute(q.create_party, {"code": f"b2b:{partner.tenant_id}"[:50],
                                              "name": (partner.name or partner.tenant_id)[:200],
                                              "source": partner.tenant_id, "currency": currency})
    row = await cur.fetchone()
    return row[0] if row else None


async def _record_approval(
    conn: psycopg.AsyncConnection, envelope: Envelope, approval_id: int | None, reason: str | None, detail: str
) -> tuple[int, str]:
    """Create the pending approval, or point the pending one at this event; `reason` None
    keeps the reason it already waits for. Returns its id and reason."""
    params = {"source": envelope.source, "event_id": envelope.event_id, "event_type": envelope.type,
              "aggregate_type": envelope.aggregate_type, "order_id": envelope.aggregate_id,
              "sequence": envelope.sequence, "payload": Jsonb(envelope.payload), "reason": reason,
              "detail": detail, "approval_id": approval_id}
    cur = await conn.execute(_UPDATE_APPROVAL if approval_id is not None else _CREATE_APPROVAL, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]
