"""Domain events: small facts about what happened, collected on the aggregate that changed.

A service function drains them inside the same transaction as the change (see
`services._record_events`); for an order of a partner-linked customer or supplier they become
`b2b_events` outbox rows there. Each event carries its wire name, the dotted `type` it has on
the wire (`sales.order.confirmed`), which is also its name in `yggdrasil.events.catalogue`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Event:
    name: ClassVar[str]


@dataclass(frozen=True)
class OrderEvent(Event):
    """Something happened to an order. The outbox renders the whole order as it is after the
    change (the destination never merges partial updates), so the event needs only its id."""

    order_id: int


@dataclass(frozen=True)
class SalesOrderCreated(OrderEvent):
    name = "sales.order.created"


@dataclass(frozen=True)
class SalesOrderUpdated(OrderEvent):
    name = "sales.order.updated"


@dataclass(frozen=True)
class SalesOrderConfirmed(OrderEvent):
    name = "sales.order.confirmed"


@dataclass(frozen=True)
class SalesOrderShipped(OrderEvent):
    name = "sales.order.shipped"


@dataclass(frozen=True)
class SalesOrderCancelled(OrderEvent):
    name = "sales.order.cancelled"


@dataclass(frozen=True)
class PurchaseOrderCreated(OrderEvent):
    name = "purchasing.order.created"


@dataclass(frozen=True)
class PurchaseOrderUpdated(OrderEvent):
    name = "purchasing.order.updated"


@dataclass(frozen=True)
class PurchaseOrderConfirmed(OrderEvent):
    name = "purchasing.order.confirmed"


@dataclass(frozen=True)
class PurchaseOrderReceived(OrderEvent):
    name = "purchasing.order.received"


@dataclass(frozen=True)
class PurchaseOrderCancelled(OrderEvent):
    name = "purchasing.order.cancelled"
