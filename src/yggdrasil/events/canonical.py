"""Canonical JSON: the one byte form that signatures and state hashes are computed over.

Keys sorted, no whitespace, UTF-8 (not ASCII-escaped). Floats are refused: their text form is
not stable across languages and versions, so amounts travel as decimal strings.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID


def _reject_floats(value: Any) -> None:
    if isinstance(value, float):
        raise TypeError(f"float {value!r} has no canonical form; use a decimal string")
    if isinstance(value, dict):
        for item in value.values():
            _reject_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_floats(item)


def canonical_json(value: Any) -> bytes:
    """Raises TypeError for floats and for values JSON cannot represent."""
    _reject_floats(value)
    return encode_float_free(value)


def encode_float_free(value: Any) -> bytes:
    """canonical_json without looking for floats, for a value known to hold none (an
    Envelope's fields: see envelope.py). Walking the value costs about as much as encoding it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def plain(value: Any) -> Any:
    """What state_hash makes of a value: a Decimal becomes its normalised text, a datetime, date
    or UUID its text form, containers are converted throughout; a float is refused."""
    if type(value) is str or type(value) is int:  # most leaves: nothing to convert
        return value
    if isinstance(value, float):
        raise TypeError(f"float {value!r} has no canonical form; use a decimal string")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"{value} has no canonical form")
        # 1.50 and 1.5 are the same quantity whatever the column scale on either side.
        return format(value.normalize(), "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def state_hash(order_state: dict[str, Any]) -> str:
    """sha256 hex of an order's state, as both sides compute it to detect divergence.

    Decimals are normalised (trailing zeros dropped), datetimes, dates and UUIDs become their
    ISO/str forms; strings are hashed as they are, so both sides must agree on what they put in.
    """
    # plain refuses floats on its way through: the encoding need not look again.
    return hashlib.sha256(encode_float_free(plain(order_state))).hexdigest()


def hash_of_plain(order_state: dict[str, Any]) -> str:
    """state_hash of a structure whose every leaf went through `plain` and whose keys are
    strings: the same digest, without walking the structure again."""
    return hashlib.sha256(encode_float_free(order_state)).hexdigest()
