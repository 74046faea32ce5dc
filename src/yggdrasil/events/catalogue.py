"""Every event type tenants exchange, with the schema of its payload.

`sales.order.*` go seller to buyer and create and move the buyer's purchase order;
`purchasing.order.*` go buyer to supplier: a purchase order sent to a supplier tenant becomes a
sales order there, and receipt of the goods is reported back. Either side may send events about
an order the other raised (the seller confirms the sales order a buyer's purchase order became;
the buyer reports receipt on the purchase order a seller's sales order became): those name the
destination's own order in `counterpart_order_id`. `b2b.receipt` answers every event
with what the receiver recorded, and `b2b.receipts` carries several of them at once (the
publisher sends the receipts waiting for one destination together: one signature and one
broker message for a batch of answers); `b2b.resync.request` asks the source to replay an order's
events from its outbox, when a gap in the sequence does not fill in time.
`b2b.partner.departed` tells each partner that its source has left the federation (`ygg
tenant depart`): the partner marks it departed and keeps every record it shares with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    ValidationError,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from yggdrasil.events.canonical import hash_of_plain, plain
from yggdrasil.events.errors import PayloadInvalid, UnknownEventType, summarise_validation_error

DECIMAL_PATTERN = r"^-?\d+(\.\d+)?$"
_DECIMAL = re.compile(DECIMAL_PATTERN)


def _decimal_text(value: Any) -> Any:
    # A JSON number would have been read as a float already, and exponent forms ("1E+2") are
    # not canonical: only plain decimal strings (or Decimals, in Python) are accepted.
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise ValueError(f"expected a decimal string like '12.50', got {value!r}")
    return Decimal(value)


DecimalString = Annotated[
    Decimal,
    BeforeValidator(_decimal_text),
    Field(allow_inf_nan=False),
    PlainSerializer(lambda value: format(value, "f"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN}),
]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderLine(Payload):
    line_no: int = Field(ge=1)
    sku: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=1000)
    quantity: DecimalString
    unit_price: DecimalString


class OrderPayload(Payload):
    """The whole order after the change: the destination never has to merge partial updates."""

    order_id: str = Field(min_length=1, max_length=100)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    lines: list[OrderLine]
    state: str = Field(pattern=r"^[a-z_]{1,40}$")
    # Set when the order was created from the destination's own order (a sales order from the
    # buyer's purchase order, a purchase order from the seller's sales order): that order's id
    # at the destination, which applies the event to it instead of creating another.
    counterpart_order_id: str | None = Field(None, min_length=1, max_length=100)

    @model_serializer(mode="wrap")
    def _omit_absent_counterpart(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Absent rather than null: an order without a counterpart travels exactly as before
        # the field existed.
        data = handler(self)
        if data.get("counterpart_order_id") is None:
            data.pop("counterpart_order_id", None)
        return data


def order_state_hash(*, order_id: str, currency: str, state: str,
                     lines: Iterable[tuple[int, str, Decimal, Decimal]]) -> str:
    """The `state_hash` of an order event: what its source computes from its order, and its
    destination from its own record of that order after applying the event, to find out
    whether the two still agree.

    It covers the source's order id and state, the currency, and the lines as
    (line_no, SKU, quantity, unit_price) in line order, where the SKU is the one of the tenant
    that raised the order: a line created from a partner's document is named by the partner's
    SKU (kept with the line), a line of an order raised here by our own. Both sides can say
    that without consulting an item map. Decimals are compared as quantities (3.000 = 3).
    Not covered: line descriptions (free text the destination does not keep) and
    `counterpart_order_id` (linkage, not state). See docs/federation/design.md, "Divergence".
    """
    # state_hash of this structure, built plain here: computed for every order event on both sides.
    return hash_of_plain({
        "order_id": plain(order_id), "currency": plain(currency), "state": plain(state),
        "lines": [{"line_no": plain(line_no), "sku": plain(sku), "quantity": plain(quantity),
                   "unit_price": plain(unit_price)}
                  for line_no, sku, quantity, unit_price in sorted(lines, key=lambda line: line[0])],
    })


def payload_state_hash(payload: OrderPayload | dict[str, Any]) -> str:
    """`order_state_hash` of an order raised by its source, as the payload describes it (its
    lines' SKUs are then the raiser's). Raises PayloadInvalid for a dict that is no order."""
    if not isinstance(payload, OrderPayload):
        try:
            payload = OrderPayload.model_validate(payload)
        except ValidationError as error:
            raise PayloadInvalid(f"order payload: {summarise_validation_error(error)}") from None
    return order_state_hash(order_id=payload.order_id, currency=payload.currency, state=payload.state,
                            lines=[(line.line_no, line.sku, line.quantity, line.unit_price)
                                   for line in payload.lines])


ReceiptOutcome = Literal["applied", "duplicate", "held", "awaiting_approval", "accepted", "rejected"]


class ReceiptPayload(Payload):
    event_id: UUID
    outcome: ReceiptOutcome
    reason: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _rejection_has_reason(self) -> "ReceiptPayload":
        if self.outcome == "rejected" and not self.reason:
            raise ValueError("a rejected receipt needs a reason")
        return self


class ReceiptItem(Payload):
    """One receipt inside `b2b.receipts`: what a `b2b.receipt` says, with the receipt's own
    event id (the receiver's inbox key) and its number among the receipts of that event."""

    receipt_id: UUID
    event_id: UUID
    outcome: ReceiptOutcome
    reason: str | None = Field(None, max_length=2000)
    sequence: int = Field(ge=1)

    @model_validator(mode="after")
    def _rejection_has_reason(self) -> "ReceiptItem":
        if self.outcome == "rejected" and not self.reason:
            raise ValueError("a rejected receipt needs a reason")
        return self


# A bundle answers at most this many events (a publisher batch or a fast-pass group: 250 by default).
MAX_RECEIPTS_PER_BUNDLE = 1000


class ReceiptBundlePayload(Payload):
    receipts: list[ReceiptItem] = Field(min_length=1, max_length=MAX_RECEIPTS_PER_BUNDLE)

    @model_validator(mode="after")
    def _one_receipt_per_id(self) -> "ReceiptBundlePayload":
        if len({item.receipt_id for item in self.receipts}) != len(self.receipts):
            raise ValueError("the same receipt twice in one bundle")
        return self


class ResyncRequestPayload(Payload):
    aggregate_id: str = Field(min_length=1, max_length=100)
    from_sequence: int = Field(ge=1)


class PartnerDepartedPayload(Payload):
    """The source announces its own departure; `tenant_id` must be the envelope's source."""

    tenant_id: str = Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")
    departed_at: AwareDatetime
    note: str = Field("", max_length=2000)


@dataclass(frozen=True)
class EventType:
    name: str
    payload_model: type[Payload]
    # The aggregate the sequence counts over; None where the sender chooses it.
    aggregate_type: str | None

    @property
    def module(self) -> str:
        return self.name.split(".", 1)[0]


CATALOGUE: dict[str, EventType] = {
    event.name: event
    for event in [
        *(EventType(f"sales.order.{verb}", OrderPayload, "sales_order")
          for verb in ("created", "updated", "confirmed", "shipped", "cancelled")),
        *(EventType(f"purchasing.order.{verb}", OrderPayload, "purchase_order")
          for verb in ("created", "updated", "cancelled", "received")),
        EventType("b2b.receipt", ReceiptPayload, None),
        # A bundle is its own aggregate (the receipts' ids decide it): sequence 1.
        EventType("b2b.receipts", ReceiptBundlePayload, "b2b_receipts"),
        EventType("b2b.resync.request", ResyncRequestPayload, None),
        # Its aggregate is the departing tenant itself: one event per destination, sequence 1.
        EventType("b2b.partner.departed", PartnerDepartedPayload, "tenant"),
    ]
}


def event_type(name: str) -> EventType:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise UnknownEventType(f"{name!r} is not in the catalogue") from None


def validate_payload(type_name: str, payload: dict[str, Any]) -> Payload:
    """The typed payload; raises UnknownEventType or PayloadInvalid."""
    try:
        return event_type(type_name).payload_model.model_validate(payload)
    except ValidationError as error:
        raise PayloadInvalid(f"{type_name}: {summarise_validation_error(error)}") from None

