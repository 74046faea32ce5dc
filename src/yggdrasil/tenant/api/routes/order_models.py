"""HTTP models and helpers shared by the sales-order and purchase-order routes."""

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, ClassVar

from fastapi import Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from yggdrasil.tenant.api.fields import MAX_ID, Money, Quantity, RowId, Version, text
from yggdrasil.tenant.domain.commands import NewLine, UpdateOrder

MAX_LINES = 500

Reference = text(200)


class OrderLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: RowId
    quantity: Quantity
    unit_price: Money | None = Field(None, description="defaults to the item's list price")


Lines = Annotated[list[OrderLineIn], Field(min_length=1, max_length=MAX_LINES)]


class OrderLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    line_no: int
    item_id: int
    quantity: Decimal
    unit_price: Decimal
    total: Decimal


class OrderOut(BaseModel):
    """Fields every order has; each kind adds its party, dates and stamps."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    warehouse_id: int
    state: str
    currency: str
    order_date: date
    reference: str
    notes: str
    total: Decimal
    lines: list[OrderLineOut]
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    cancelled_at: datetime | None
    version: int


class OrderPatch(BaseModel):
    """A partial change: only the fields sent are changed; `lines`, if sent, replaces all lines."""

    model_config = ConfigDict(extra="forbid")
    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    version: Version

    @model_validator(mode="after")
    def _no_null_for_required_fields(self) -> "OrderPatch":
        nulls = sorted(name for name in self.model_fields_set
                       if getattr(self, name) is None and name not in self.NULLABLE)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave a field out to keep its value")
        return self

    def to_command(self, order_id: int) -> UpdateOrder:
        changes = self.model_dump(exclude_unset=True, exclude={"version", "lines"})
        lines = self.lines if "lines" in self.model_fields_set else None  # type: ignore[attr-defined]
        return UpdateOrder(order_id=order_id, version=self.version, changes=changes,
                           lines=new_lines(lines) if lines is not None else None)


class OrderAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Version | None = Field(None, description="refuse (409) if the order moved past this version")


def new_lines(lines: list[OrderLineIn]) -> list[NewLine]:
    return [NewLine(item_id=line.item_id, quantity=line.quantity, unit_price=line.unit_price) for line in lines]


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    # Serialise once; returning the model would make FastAPI validate it a second time.
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def action_version(body: OrderAction | None) -> int | None:
    return body.version if body is not None else None


PartyFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]
DateFrom = Annotated[date | None, Query(alias="from", description="order_date on or after")]
DateTo = Annotated[date | None, Query(alias="to", description="order_date on or before")]

