"""Sales orders: draft -> confirmed -> shipped, or cancelled before shipping.

An order created from a buyer's purchase order by federation carries the buyer's tenant and
order id (`b2b_source_tenant`, `b2b_source_order_id`, declared on `Order`); they are set once,
at creation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from yggdrasil.tenant.domain import events
from yggdrasil.tenant.domain.orders import Order, OrderLine

STATES = ("draft", "confirmed", "shipped", "cancelled")

TRANSITIONS = frozenset({
    ("draft", "confirmed"), ("confirmed", "shipped"),
    ("draft", "cancelled"), ("confirmed", "cancelled"),
})

SalesOrderLine = OrderLine


@dataclass(kw_only=True)
class SalesOrder(Order):
    KIND = "sales order"
    PARTY = "customer_id"
    STATES = STATES
    TRANSITIONS = TRANSITIONS
    EVENTS = {
        "created": events.SalesOrderCreated,
        "updated": events.SalesOrderUpdated,
        "confirmed": events.SalesOrderConfirmed,
        "shipped": events.SalesOrderShipped,
        "cancelled": events.SalesOrderCancelled,
    }
    EDITABLE = frozenset({"customer_id", "warehouse_id", "currency", "order_date", "reference", "notes"})

    customer_id: int
    shipped_at: datetime | None = None

    def ship(self) -> None:
        """Only the state: taking the goods out of stock is the service's job, in the same
        transaction."""
        self._move_to("shipped")
