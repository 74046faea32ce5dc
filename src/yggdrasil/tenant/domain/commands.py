"""Commands: what a caller asks the tenant to do with its orders. Plain data, validated at the
edge (the HTTP models, or the sidecar's event schema) and carried out by `services.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class NewLine:
    item_id: int
    quantity: Decimal
    unit_price: Decimal | None = None    # None: the item's list price


@dataclass(frozen=True, kw_only=True)
class CreateSalesOrder:
    customer_id: int
    warehouse_id: int
    lines: Sequence[NewLine]
    currency: str | None = None          # None: the customer's currency
    order_date: date | None = None       # None: today
    reference: str = ""
    notes: str = ""


@dataclass(frozen=True, kw_only=True)
class CreatePurchaseOrder:
    supplier_id: int
    warehouse_id: int
    lines: Sequence[NewLine]
    currency: str | None = None          # None: the supplier's currency
    order_date: date | None = None
    expected_date: date | None = None
    reference: str = ""
    notes: str = ""
    # Set when the order arrives by federation: the seller's tenant and sales order id.
    b2b_source_tenant: str | None = None
    b2b_source_order_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class UpdateOrder:
    """Change a draft order: the header fields in `changes` and, if `lines` is given, replace
    all its lines. `version` is the version the caller read."""

    order_id: int
    version: int
    changes: Mapping[str, object] = field(default_factory=dict)
    lines: Sequence[NewLine] | None = None
