"""Field types shared by request models. PostgreSQL rejects NUL characters in text and numbers
beyond a column's precision; refusing them here turns what would be a database error into a
422 that names the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, Field, StringConstraints

MAX_ID = 2**63 - 1


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def text(max_length: int, min_length: int = 0) -> object:
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length),
        AfterValidator(_no_nul),
    ]


Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50), AfterValidator(_no_nul)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_no_nul)]
Note = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_no_nul)]
Email = Annotated[
    str, StringConstraints(max_length=254, pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$")
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
TenantRef = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,62}$")]
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
Version = Annotated[int, Field(ge=1, le=2**31 - 1)]
# numeric(14,4) / numeric(14,3): at most 10 / 11 digits before the point.
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4, allow_inf_nan=False)]
Quantity = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=3, allow_inf_nan=False)]
SignedQuantity = Annotated[Decimal, Field(max_digits=14, decimal_places=3, allow_inf_nan=False)]
NonNegativeQuantity = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=3, allow_inf_nan=False)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID, description="row id")]
Sku = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), AfterValidator(_no_nul)]
Unit = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20), AfterValidator(_no_nul)]


def refuse_nulls(patch: object) -> None:
    """For a PATCH model's after-validator: a PATCH leaves out what it does not change, and an
    explicit null would blank a NOT NULL column (a database error instead of a named field)."""
    nulls = sorted(name for name in patch.model_fields_set if getattr(patch, name) is None)
    if nulls:
        raise ValueError(f"{', '.join(nulls)} cannot be null; leave a field out to keep its value")
