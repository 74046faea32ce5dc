"""Every event type tenants exchange, with the schema of its payload.

`sales.order.*` go seller to buyer and create and move the buyer's purchase order;
`purchasing.order.*` go buyer to supplier: a purchase order sent to a supplier tenant becomes a
sales order there, and receipt of the goods is reported back. `b2b.receipt` answers every event
with what the receiver recorded; `b2b.resync.request` asks the source to replay an order's
events from its outbox, when a gap in the sequence does not fill in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, ValidationError, model_validator

from yggdrasil.events.errors import PayloadInvalid, UnknownEventType

# Decimal on the wire is a JSON string ("12.50"): a JSON number would be read as a float.
DecimalString = Annotated[
    Decimal,
    Field(json_schema_extra={"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}, allow_inf_nan=False),
    PlainSerializer(lambda value: str(value), return_type=str, when_used="always"),
]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderLine(Payload):
    line_no: int = Field(ge=1)
    sku: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=1000)
    quantity: DecimalString
    unit_price: DecimalString

    @model_validator(mode="before")
    @classmethod
    def _decimals_are_strings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("quantity", "unit_price"):
                if name in data and not isinstance(data[name], str | Decimal):
                    raise ValueError(f"{name} must be a decimal string, not {type(data[name]).__name__}")
        return data


class OrderPayload(Payload):
    """The whole order after the change: the destination never has to merge partial updates."""

    order_id: str = Field(min_length=1, max_length=100)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    lines: list[OrderLine]
    state: str = Field(pattern=r"^[a-z_]{1,40}$")


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


class ResyncRequestPayload(Payload):
    aggregate_id: str = Field(min_length=1, max_length=100)
    from_sequence: int = Field(ge=1)


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
        EventType("b2b.resync.request", ResyncRequestPayload, None),
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
        raise PayloadInvalid(f"{type_name}: {_summary(error)}") from None


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}" for item in error.errors()
    )
