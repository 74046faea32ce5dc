"""Purchase orders: draft -> confirmed -> received, or cancelled before receipt.

An order that arrived by federation carries the seller's tenant and order id
(`b2b_source_tenant`, `b2b_source_order_id`, declared on `Order`); they are set once, at creation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from yggdrasil.tenant.domain import events
from yggdrasil.tenant.domain.orders import Order, OrderLine

STATES = ("draft", "confirmed", "received", "cancelled")

TRANSITIONS = frozenset({
    ("draft", "confirmed"), ("confirmed", "received"),
    ("draft", "cancelled"), ("confirmed", "cancelled"),
})

PurchaseOrderLine = OrderLine


@dataclass(kw_only=True)
class PurchaseOrder(Order):
    KIND = "purchase order"
    PARTY = "supplier_id"
    STATES = STATES
    TRANSITIONS = TRANSITIONS
    EVENTS = {
        "created": events.PurchaseOrderCreated,
        "updated": events.PurchaseOrderUpdated,
        "confirmed": events.PurchaseOrderConfirmed,
        "received": events.PurchaseOrderReceived,
        "cancelled": events.PurchaseOrderCancelled,
    }
    EDITABLE = frozenset({"supplier_id", "warehouse_id", "currency", "order_date", "expected_date",
                          "reference", "notes"})

    supplier_id: int
    expected_date: date | None = None
    received_at: datetime | None = None

    def receive(self) -> None:
        """Only the state: putting the goods into stock is the service's job, in the same
        transaction."""
        self._move_to("received")
