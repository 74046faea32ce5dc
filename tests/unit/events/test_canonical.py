"""The canonical encoding is the standard library's: orjson only makes it faster (canonical.py).
A byte of difference would break every signature and state hash between two versions."""

import hashlib
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from yggdrasil.events import OrderLine, OrderPayload
from yggdrasil.events.canonical import canonical_json, encode_float_free, state_hash
from yggdrasil.events.envelope import Envelope

pytestmark = pytest.mark.unit


def standard(value: object) -> bytes:
    """What every signature and state hash has been computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def every_code_point() -> list[str]:
    return [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]


def test_every_code_point_is_written_as_the_standard_library_writes_it():
    # Control characters, quotes, backslashes, DEL, U+2028, the BMP's end, the astral planes.
    points = every_code_point()
    for start in range(0, len(points), 2048):
        chunk = "".join(points[start:start + 2048])
        value = {chunk: [chunk, chunk[:7]], "k" + chunk[:40]: chunk[::-1]}
        assert encode_float_free(value) == standard(value), f"code points from U+{ord(points[start]):04X}"


def test_each_control_character_alone_is_escaped_the_same_way():
    for code in range(0x20):
        assert encode_float_free({"c": chr(code)}) == standard({"c": chr(code)}), hex(code)


def test_keys_sort_by_code_point_across_planes():
    value = {"z": 1, "é": 2, "e": 3, "\uffff": 4, "😀": 5, "": 6, "a": {"y": None, "b": True, "aa": False}}
    assert encode_float_free(value) == standard(value)
    assert encode_float_free(value).startswith(b'{"":6,"a":{"aa":false,"b":true,"y":null},"e":3,"z":1')


@pytest.mark.parametrize("number", [0, -1, 2**63 - 1, -(2**63), 2**64 - 1])
def test_integers_within_64_bits(number):
    assert encode_float_free({"n": number, "l": [number]}) == standard({"n": number, "l": [number]})


@pytest.mark.parametrize("value", [
    {"big": 2**64}, {"small": -(2**63) - 1}, {"huge": 10**40},  # beyond what orjson writes
    {2: "b", 1: "a"},  # keys that are not strings
    {"s": type("Text", (str,), {})("subclass")},  # a str subclass, written as its text
], ids=["2^64", "-2^63-1", "10^40", "int keys", "str subclass"])
def test_what_orjson_declines_is_written_by_the_standard_library(value):
    assert encode_float_free(value) == standard(value)


@pytest.mark.parametrize("value, error", [
    ({"s": "\ud800"}, UnicodeEncodeError),  # a lone surrogate has no UTF-8 form
    ({"t": datetime(2026, 12, 4, tzinfo=UTC)}, TypeError),
    ({"d": Decimal("1.5")}, TypeError),
])
def test_what_neither_encodes_raises_as_it_did(value, error):
    with pytest.raises(error):
        encode_float_free(value)


def test_canonical_json_still_refuses_what_json_cannot_represent():
    with pytest.raises(TypeError):
        canonical_json({"id": UUID(int=1)})
    with pytest.raises(TypeError, match="float"):
        canonical_json({"amount": 1.5})


def test_an_order_event_signs_and_hashes_the_same_bytes_as_before():
    payload = OrderPayload(order_id="SO-ÅNGSTRÖM-1", currency="SEK", state="confirmed", lines=[
        OrderLine(line_no=n, sku=f"SKU-{n}", description=f"Vägg \"{n}\"\t\u2028 😀",
                  quantity=Decimal(n), unit_price=Decimal("12.50")) for n in (1, 2, 3)])
    envelope = Envelope.create(type="sales.order.confirmed", source="acme-seller", destination="bravo-buyer",
                               aggregate_id="SO-ÅNGSTRÖM-1", sequence=2, payload=payload,
                               occurred_at=datetime(2026, 12, 4, 9, 30, tzinfo=UTC), state_hash="b" * 64)
    fields = envelope.model_dump(mode="json", exclude={"signature"})
    assert envelope.signing_bytes() == standard(fields)
    assert envelope.encode() == standard(envelope.model_dump(mode="json"))
    state = {"order_id": "SO-ÅNGSTRÖM-1", "lines": [{"sku": "SKU-1", "quantity": Decimal("2.50")}]}
    expected = standard({"order_id": "SO-ÅNGSTRÖM-1", "lines": [{"sku": "SKU-1", "quantity": "2.5"}]})
    assert state_hash(state) == hashlib.sha256(expected).hexdigest()
