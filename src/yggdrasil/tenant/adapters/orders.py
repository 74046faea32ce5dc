"""SQL for sales and purchase orders: one repository, parameterised by the tables of each kind.

Round trips are what a write costs here: every audited write holds the audit chain's head row
from its first change to commit (migration 0002), so each statement sent after the first
change lengthens the window in which all other writers of the tenant wait. Hence: an order and
all its lines go in as one statement; the rows that statement wrote come back in its RETURNING
and are never read again; references are checked in one read before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from yggdrasil.tenant.domain.orders import Order, OrderLine, state_columns
from yggdrasil.tenant.domain.purchasing import PurchaseOrder
from yggdrasil.tenant.domain.sales import SalesOrder
from yggdrasil.tenant.errors import NotFound, StaleVersion

# Domain fields that are not columns of the order's header table.
_NOT_COLUMNS = frozenset({"lines", "events", "partner_tenant_id"})
# Columns the database fills in and the application never writes.
_GENERATED = frozenset({"id", "state", "version", "created_at", "updated_at"})
# Set once, when a federated order is created, and never changed.
_SET_ONCE = frozenset({"b2b_source_tenant", "b2b_source_order_id"})


@dataclass(frozen=True)
class OrderTables:
    """Where one kind of order lives."""

    order_type: type[Order]
    header: str          # crm_sales_orders
    lines: str           # crm_sales_order_lines
    party_table: str     # customers

    @property
    def party(self) -> str:
        return self.order_type.PARTY

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.order_type) if f.name not in _NOT_COLUMNS)

    @property
    def writable(self) -> tuple[str, ...]:
        """Header columns the application sets: everything but ids, state, versions and stamps."""
        stamps = set(state_columns(self.order_type).values())
        return tuple(c for c in self.columns if c not in _GENERATED and c not in stamps)

    @property
    def updatable(self) -> tuple[str, ...]:
        return tuple(c for c in self.writable if c not in _SET_ONCE)


SALES = OrderTables(SalesOrder, "crm_sales_orders", "crm_sales_order_lines", "customers")
PURCHASES = OrderTables(PurchaseOrder, "purchasing_orders", "purchasing_order_lines", "suppliers")


@dataclass(frozen=True)
class References:
    """What the database knows about the records a new or edited order names."""

    party_found: bool
    party_active: bool
    party_currency: str | None
    partner_tenant_id: str | None
    warehouse_found: bool
    list_prices: dict[int, Decimal]      # item id -> list price, for the items that exist


@dataclass(frozen=True)
class OrderFilter:
    state: str | None = None
    party_id: int | None = None
    date_from: date | None = None
    date_to: date | None = None


class _Queries:
    """The statements for one kind of order, composed once: constant query text also lets
    psycopg prepare them after a few executions."""

    def __init__(self, t: OrderTables):
        header, lines, party = sql.Identifier(t.header), sql.Identifier(t.lines), sql.Identifier(t.party_table)
        party_col = sql.Identifier(t.party)
        selected = sql.SQL(", ").join(sql.Identifier("o", c) for c in t.columns)
        writable = [sql.Identifier(c) for c in t.writable]

        self.references = self._text(sql.SQL("""
            SELECT p.id IS NOT NULL AS party_found, coalesce(p.active, false) AS party_active,
                   p.currency AS party_currency, p.partner_tenant_id,
                   w.id IS NOT NULL AS warehouse_found, i.ids AS item_ids, i.prices AS item_prices
              FROM (VALUES (1)) AS one
              LEFT JOIN {party} p ON p.id = %(party_id)s
              LEFT JOIN warehouses w ON w.id = %(warehouse_id)s
             CROSS JOIN LATERAL (
                   SELECT array_agg(id) AS ids, array_agg(list_price) AS prices
                     FROM items WHERE id = ANY(%(item_ids)b::bigint[])) AS i
            """).format(party=party))

        # An order with its lines in one row; lines come as parallel arrays (numeric arrays keep
        # Decimal precision, which JSON aggregation would lose to floats).
        self._select = sql.SQL("""
            SELECT {selected}, p.partner_tenant_id,
                   l.line_ids, l.line_nos, l.item_ids, l.quantities, l.unit_prices
              FROM {header} o
              JOIN {party} p ON p.id = o.{party_col}
              LEFT JOIN LATERAL (
                   SELECT array_agg(id ORDER BY line_no) AS line_ids,
                          array_agg(line_no ORDER BY line_no) AS line_nos,
                          array_agg(item_id ORDER BY line_no) AS item_ids,
                          array_agg(quantity ORDER BY line_no) AS quantities,
                          array_agg(unit_price ORDER BY line_no) AS unit_prices
                     FROM {lines} WHERE order_id = o.id) AS l ON true
            """).format(selected=selected, header=header, party=party, party_col=party_col, lines=lines)
        self.get = self._text(self._select + sql.SQL(" WHERE o.id = %(id)s"))
        # Locks the order only (not its party): concurrent changes of one order queue here and
        # then see each other's result, so the second gets a clear "is shipped" instead of a race.
        self.get_for_update = self._text(self._select + sql.SQL(" WHERE o.id = %(id)s FOR UPDATE OF o"))

        insert_lines = sql.SQL("""
            INSERT INTO {lines} (order_id, line_no, item_id, quantity, unit_price)
            SELECT {order_id}, l.line_no, l.item_id, l.quantity, l.unit_price
              FROM {source} unnest(%(line_nos)b::int[], %(item_ids)b::bigint[],
                          %(quantities)b::numeric[], %(unit_prices)b::numeric[])
                   AS l(line_no, item_id, quantity, unit_price)
            RETURNING id, line_no
            """)
        # Header and lines in one statement. order_date NULL means today, by the database clock.
        values = [
            sql.SQL("coalesce(%(order_date)s::date, current_date)") if c == "order_date" else sql.Placeholder(c)
            for c in t.writable
        ]
        self.insert = self._text(sql.SQL("""
            WITH header AS (
                INSERT INTO {header} ({columns}) VALUES ({values})
                RETURNING id, state, version, order_date, created_at, updated_at
            ), inserted_lines AS ({insert_lines})
            SELECT header.*, (SELECT array_agg(id ORDER BY line_no) FROM inserted_lines) AS line_ids
              FROM header
            """).format(
                header=header, columns=sql.SQL(", ").join(writable), values=sql.SQL(", ").join(values),
                insert_lines=insert_lines.format(lines=lines, order_id=sql.SQL("header.id"), source=sql.SQL("header,")),
            ))
        self.insert_lines = self._text(insert_lines.format(
            lines=lines, order_id=sql.Placeholder("order_id"), source=sql.SQL("")))
        self.delete_lines = self._text(sql.SQL("DELETE FROM {lines} WHERE order_id = %(order_id)s").format(lines=lines))

        # One UPDATE per state: entering a state stamps its column once (confirmed_at, ...).
        stamps = state_columns(t.order_type)
        self.update: dict[str, str] = {}
        for state in t.order_type.STATES:
            assignments = [sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in t.updatable]
            assignments.append(sql.SQL("state = %(state)s"))
            if state in stamps:
                stamp = sql.Identifier(stamps[state])
                assignments.append(sql.SQL("{s} = coalesce({s}, now())").format(s=stamp))
            assignments.append(sql.SQL("version = version + 1, updated_at = now()"))
            self.update[state] = self._text(sql.SQL("""
                UPDATE {header} SET {assignments}
                 WHERE id = %(id)s AND version = %(version)s
                RETURNING version, updated_at, {stamps}
                """).format(header=header, assignments=sql.SQL(", ").join(assignments),
                            stamps=sql.SQL(", ").join(map(sql.Identifier, stamps.values()))))

        self.party_col = party_col

    def list(self, f: OrderFilter) -> str:
        conditions = [sql.SQL("o.id > %(after)s")]
        if f.state is not None:
            conditions.append(sql.SQL("o.state = %(state)s"))
        if f.party_id is not None:
            conditions.append(sql.SQL("o.{} = %(party_id)s").format(self.party_col))
        if f.date_from is not None:
            conditions.append(sql.SQL("o.order_date >= %(date_from)s"))
        if f.date_to is not None:
            conditions.append(sql.SQL("o.order_date <= %(date_to)s"))
        return self._text(self._select + sql.SQL(" WHERE {} ORDER BY o.id LIMIT %(limit)s").format(
            sql.SQL(" AND ").join(conditions)))

    @staticmethod
    def _text(query: sql.Composable) -> str:
        return query.as_string(None)


_QUERIES: dict[OrderTables, _Queries] = {}


def _queries(tables: OrderTables) -> _Queries:
    q = _QUERIES.get(tables)
    if q is None:
        q = _QUERIES[tables] = _Queries(tables)
    return q


def _line_arrays(lines: Sequence[OrderLine]) -> dict[str, list]:
    return {
        "line_nos": [line.line_no for line in lines],
        "item_ids": [line.item_id for line in lines],
        "quantities": [line.quantity for line in lines],
        "unit_prices": [line.unit_price for line in lines],
    }


class PgOrderRepository:
    """Orders of one kind (`SALES` or `PURCHASES`) in the caller's transaction."""

    def __init__(self, conn: psycopg.AsyncConnection, tables: OrderTables):
        self.conn = conn
        self.tables = tables
        self.q = _queries(tables)

    async def references(
        self, *, party_id: int | None, warehouse_id: int | None, item_ids: Sequence[int]
    ) -> References:
        """One read that answers whether the named party, warehouse and items exist (None:
        not asked), with the party's state and currency and the items' list prices. Takes no
        locks: the foreign keys of the write that follows are what hold the rows in place."""
        cur = await self.conn.execute(self.q.references, {
            "party_id": party_id, "warehouse_id": warehouse_id, "item_ids": list(item_ids),
        })
        (party_found, party_active, currency, partner, warehouse_found, ids, prices) = await cur.fetchone()
        return References(
            party_found=party_found, party_active=party_active,
            party_currency=currency.strip() if currency else None, partner_tenant_id=partner,
            warehouse_found=warehouse_found, list_prices=dict(zip(ids or (), prices or ())),
        )

    async def get(self, order_id: int, *, for_update: bool = False) -> Order:
        """The order with its lines; raises NotFound. `for_update` locks the order row until
        the transaction ends."""
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self.q.get_for_update if for_update else self.q.get, {"id": order_id})
            row = await cur.fetchone()
        if row is None:
            raise NotFound(resource=self.tables.order_type.KIND, id=order_id)
        return self._order(row)

    async def list(self, f: OrderFilter, *, limit: int, after: int) -> list[Order]:
        """Up to `limit` orders with id > after, in id order, matching the filter."""
        params = {"after": after, "limit": limit, "state": f.state, "party_id": f.party_id,
                  "date_from": f.date_from, "date_to": f.date_to}
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self.q.list(f), params)
            return [self._order(row) for row in await cur.fetchall()]

    async def add(self, order: Order) -> None:
        """Insert a new order and its lines in one statement; fills in the order's id,
        version, dates, timestamps and line ids from what the database assigned."""
        params = {c: getattr(order, c) for c in self.tables.writable}
        params.update(_line_arrays(order.lines))
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self.q.insert, params)
            row = await cur.fetchone()
        for name in ("id", "state", "version", "order_date", "created_at", "updated_at"):
            setattr(order, name, row[name])
        for line, line_id in zip(order.lines, row["line_ids"]):
            line.id = line_id

    async def save(self, order: Order, *, lines_changed: bool = False) -> None:
        """Write the order's header and state (stamping the state's column on entry) if the
        row is still at `order.version`, then bump the version; with `lines_changed`, replace
        all its lines. A row that moved on raises StaleVersion."""
        params: dict[str, Any] = {c: getattr(order, c) for c in self.tables.updatable}
        params.update(id=order.id, version=order.version, state=order.state)
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self.q.update[order.state], params)
            row = await cur.fetchone()
            if row is None:
                current = await self.get(order.id)  # raises NotFound
                raise StaleVersion(resource=order.KIND, id=order.id, sent=order.version, current=current.version)
            for name, value in row.items():
                setattr(order, name, value)
            if lines_changed:
                await cur.execute(self.q.delete_lines, {"order_id": order.id})
                await cur.execute(self.q.insert_lines, {"order_id": order.id, **_line_arrays(order.lines)})
                ids = {r["line_no"]: r["id"] for r in await cur.fetchall()}
                for line in order.lines:
                    line.id = ids[line.line_no]

    def _order(self, row: dict[str, Any]) -> Order:
        lines = [
            OrderLine(id=i, line_no=n, item_id=item, quantity=q, unit_price=p)
            for i, n, item, q, p in zip(row.pop("line_ids") or (), row.pop("line_nos") or (),
                                        row.pop("item_ids") or (), row.pop("quantities") or (),
                                        row.pop("unit_prices") or ())
        ]
        row["currency"] = row["currency"].strip()
        return self.tables.order_type(lines=lines, **row)
