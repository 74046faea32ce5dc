"""What sales and purchase orders have in common: lines, totals, a state that moves only along
declared transitions, editing only while in draft, optimistic versions, collected events.

`sales.py` and `purchasing.py` declare their own states, transitions and events as data and
add their party and their terminal step (ship, receive).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import ClassVar, Self

from yggdrasil.tenant import errors
from yggdrasil.tenant.domain.events import Event, OrderEvent

# Quantities have three decimals, prices four (numeric(14,3), numeric(14,4)); line and order
# totals keep the price's precision.
QUANTITY_STEP = Decimal("0.001")
MONEY_STEP = Decimal("0.0001")


@dataclass(kw_only=True)
class OrderLine:
    item_id: int
    quantity: Decimal
    unit_price: Decimal
    line_no: int = 0
    id: int | None = None

    @property
    def total(self) -> Decimal:
        return (self.quantity * self.unit_price).quantize(MONEY_STEP, ROUND_HALF_UP)


@dataclass(kw_only=True)
class Order:
    # Declared by each kind of order.
    KIND: ClassVar[str]                                 # "sales order": used in messages
    PARTY: ClassVar[str]                                # "customer_id" / "supplier_id"
    STATES: ClassVar[tuple[str, ...]]
    TRANSITIONS: ClassVar[frozenset[tuple[str, str]]]
    EVENTS: ClassVar[dict[str, type[OrderEvent]]]       # "created", "updated" and each target state
    EDITABLE: ClassVar[frozenset[str]]                  # header fields a draft may change

    warehouse_id: int
    lines: list[OrderLine]
    id: int | None = None
    state: str = "draft"
    currency: str = "EUR"
    order_date: date | None = None                      # None: today, by the database's clock
    reference: str = ""
    notes: str = ""
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None
    confirmed_at: datetime | None = None
    cancelled_at: datetime | None = None
    # Set when the order was created from a partner tenant's order (a purchase order from a
    # seller's sales order, a sales order from a buyer's purchase order): that tenant and its
    # order id. Set once, at creation.
    b2b_source_tenant: str | None = None
    b2b_source_order_id: str | None = None
    # The counterparty's tenant id when the customer or supplier is itself a Yggdrasil tenant:
    # changes to such an order federate (the outbox reads it). Not an order column.
    partner_tenant_id: str | None = None
    events: list[Event] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def new(cls, *, lines: Iterable[OrderLine], **header: object) -> Self:
        """A new draft order; refuses an order without lines or with a bad line."""
        order = cls(lines=[], **header)  # type: ignore[arg-type]
        order._set_lines(lines)
        return order

    # -- reading ----------------------------------------------------------------------------

    @property
    def total(self) -> Decimal:
        return sum((line.total for line in self.lines), Decimal("0.0000"))

    @property
    def party_id(self) -> int:
        return getattr(self, self.PARTY)

    def can_move_to(self, state: str) -> bool:
        return (self.state, state) in self.TRANSITIONS

    # -- changing ---------------------------------------------------------------------------

    def record_created(self) -> None:
        """Called once the order has its id (the database assigns it)."""
        if self.id is None:
            raise ValueError("an order gets its id before it is recorded as created")
        self.events.append(self.EVENTS["created"](order_id=self.id))

    def check_version(self, expected: int | None) -> None:
        """Refuse a change made from a stale copy; None means the caller does not care."""
        if expected is not None and expected != self.version:
            raise errors.StaleVersion(resource=self.KIND, id=self.id, sent=expected, current=self.version)

    def check_editable(self) -> None:
        if self.state != "draft":
            raise errors.NotEditable(resource=self.KIND, id=self.id, state=self.state)

    def edit(self, *, lines: Iterable[OrderLine] | None = None, **header: object) -> bool:
        """Change header fields and/or replace all lines; only a draft can be edited.
        Returns whether anything was given to change."""
        self.check_editable()
        unknown = set(header) - self.EDITABLE
        if unknown:
            raise ValueError(f"{self.KIND} fields {sorted(unknown)} cannot be edited")
        if lines is None and not header:
            return False
        for name, value in header.items():
            setattr(self, name, value)
        if lines is not None:
            self._set_lines(lines)
        self.events.append(self.EVENTS["updated"](order_id=self.id))
        return True

    def confirm(self) -> None:
        self._move_to("confirmed")

    def cancel(self) -> None:
        self._move_to("cancelled")

    def pop_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def _move_to(self, target: str) -> None:
        if not self.can_move_to(target):
            raise errors.InvalidTransition(resource=self.KIND, id=self.id, state=self.state, action=target)
        self.state = target
        self.events.append(self.EVENTS[target](order_id=self.id))

    def _set_lines(self, lines: Iterable[OrderLine]) -> None:
        lines = list(lines)
        if not lines:
            raise errors.InvalidInput("order.no_lines")
        for n, line in enumerate(lines, start=1):
            if not line.quantity > 0:
                raise errors.InvalidInput("order.line_invalid", line_no=n, problem="quantity must be greater than 0")
            if not line.unit_price >= 0:
                raise errors.InvalidInput("order.line_invalid", line_no=n, problem="unit_price must not be negative")
            quantity, unit_price = line.quantity.quantize(QUANTITY_STEP), line.unit_price.quantize(MONEY_STEP)
            if quantity != line.quantity:
                raise errors.InvalidInput("order.line_invalid", line_no=n, problem="quantity has more than 3 decimals")
            if unit_price != line.unit_price:
                raise errors.InvalidInput("order.line_invalid", line_no=n, problem="unit_price has more than 4 decimals")
            line.quantity, line.unit_price = quantity, unit_price
            line.line_no = n
            line.id = None  # replaced lines are new rows
        self.lines = lines


def state_columns(order_type: type[Order]) -> dict[str, str]:
    """Each state but draft has a timestamp column named after it (confirmed -> confirmed_at)."""
    names = {f.name for f in fields(order_type)}
    columns = {state: f"{state}_at" for state in order_type.STATES if state != "draft"}
    missing = set(columns.values()) - names
    if missing:
        raise TypeError(f"{order_type.__name__} lacks timestamp fields {sorted(missing)}")
    return columns
