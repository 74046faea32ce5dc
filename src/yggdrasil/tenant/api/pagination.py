"""Keyset pagination shared by every list endpoint: `?limit=&after=` over ascending ids.

Offsets drift when rows are inserted between pages and get slower with depth; a cursor on the
primary key does neither."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

T = TypeVar("T")

MAX_ID = 2**63 - 1
Limit = Annotated[int, Query(ge=1, le=500, description="page size (1-500)")]
After = Annotated[int, Query(ge=0, le=MAX_ID, description="return rows with id greater than this cursor")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_after: int | None = None


def page_of(items: list, limit: int) -> dict:
    """Build a page from up to limit + 1 fetched rows; the extra row only says there is more."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_after": items[-1]["id"] if more and items else None}
