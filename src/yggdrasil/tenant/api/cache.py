"""CacheManager: rendered GET responses, bounded in bytes, with a TTL.

Fresh entries answer without touching the database. Expired entries are kept (until evicted
for space or older than `max_stale`) because while the database is unreachable they are the
only answer we have: they are then served marked stale, with their age.

Entries carry tags (the resources they were built from); a write invalidates its tags at once
in this process, and the database's change notifications invalidate them in every process.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

# Which cached resources a change to a table can affect.
TABLE_TAGS: dict[str, frozenset[str]] = {
    "customers": frozenset({"customers", "sales-orders", "reports"}),
    "suppliers": frozenset({"suppliers", "purchase-orders", "reports"}),
    "items": frozenset({"items", "stock", "sales-orders", "purchase-orders", "reports"}),
    "warehouses": frozenset({"warehouses", "stock", "reports"}),
    "stock_levels": frozenset({"stock", "reports"}),
    "stock_moves": frozenset({"stock", "reports"}),
    "crm_sales_orders": frozenset({"sales-orders", "reports"}),
    "crm_sales_order_lines": frozenset({"sales-orders", "reports"}),
    "purchasing_orders": frozenset({"purchase-orders", "reports"}),
    "purchasing_order_lines": frozenset({"purchase-orders", "reports"}),
    # An order's `federation` status is read from these (notified by migration 0005).
    "b2b_events": frozenset({"sales-orders", "purchase-orders"}),
    "b2b_held_events": frozenset({"sales-orders", "purchase-orders"}),
    "b2b_approvals": frozenset({"sales-orders", "purchase-orders"}),
}


def tags_for_tables(*tables: str) -> frozenset[str]:
    return frozenset().union(*(TABLE_TAGS.get(t, frozenset()) for t in tables))


@dataclass
class CacheEntry:
    body: bytes
    tags: frozenset[str]
    stored_at: float = field(default_factory=lambda: time.monotonic())

    @property
    def size(self) -> int:
        # The body dominates; 200 bytes is a fair allowance for the key and bookkeeping.
        return len(self.body) + 200

    def age(self, now: float | None = None) -> float:
        return (now or time.monotonic()) - self.stored_at


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale: int = 0
    evictions: int = 0


class ResponseCache:
    def __init__(self, max_bytes: int, ttl: float, max_stale: float):
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.max_stale = max_stale
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self.stats = CacheStats()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key: str) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is None or entry.age() > self.ttl:
            return None
        self._entries.move_to_end(key)
        return entry

    def stale(self, key: str) -> CacheEntry | None:
        """Any entry still kept, however old, up to max_stale: for use while the database is down."""
        entry = self._entries.get(key)
        if entry is None or entry.age() > self.max_stale:
            return None
        return entry

    def put(self, key: str, body: bytes, tags: frozenset[str]) -> None:
        entry = CacheEntry(body, tags)
        if entry.size > self.max_bytes:
            return
        self._remove(key)
        self._entries[key] = entry
        self._bytes += entry.size
        while self._bytes > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size
            self.stats.evictions += 1

    def invalidate(self, tags: frozenset[str]) -> int:
        doomed = [key for key, entry in self._entries.items() if entry.tags & tags]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _remove(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
