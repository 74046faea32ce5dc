"""Keyset pagination for the portal's lists, the same contract as the tenant server's:
`?limit=&after=` over ascending ids, and `next_after` when there is more."""

from typing import Annotated, Generic, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel

T = TypeVar("T")

MAX_ID = 2**63 - 1
Limit = Annotated[int, Query(ge=1, le=500, description="page size (1-500)")]
ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]
After = Annotated[int, Query(ge=0, le=MAX_ID, description="return rows whose id is greater than this cursor")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_after: int | None = None


def page_of(rows: list[dict], limit: int, key: str = "id") -> dict:
    """A page from up to limit + 1 fetched rows; the extra row only says there is more."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_after": rows[-1][key] if more and rows else None}
