import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from pydantic import ValidationError

from yggdrasil.events import (
    Envelope,
    EnvelopeMalformed,
    OrderLine,
    OrderPayload,
    PayloadInvalid,
    PayloadTooLarge,
    UnknownEventType,
    UnsupportedSchemaVersion,
    envelope_json_schema,
    order_state_hash,
    payload_state_hash,
    state_hash,
)
from yggdrasil.events.catalogue import CATALOGUE

pytestmark = pytest.mark.unit

EVENT_ID = UUID("0b5c2d1e-6a7f-4c3b-9e8d-1f2a3b4c5d6e")


def order_payload(**changes) -> OrderPayload:
    fields = dict(
        order_id="SO-RETRO-1", currency="EUR", state="draft",
        lines=[OrderLine(line_no=1, sku="RETRO-CLOCK", description="Retro clock",
                         quantity=Decimal("2"), unit_price=Decimal("12.50"))],
    )
    return OrderPayload(**(fields | changes))


def order_created(**changes) -> Envelope:
    fields = dict(
        type="sales.order.created", source="acme-seller", destination="bravo-buyer",
        aggregate_id="SO-RETRO-1", sequence=1, payload=order_payload(), event_id=EVENT_ID,
        occurred_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC), state_hash="a" * 64,
    )
    return Envelope.create(**(fields | changes))


def wire(envelope: Envelope, **changes) -> bytes:
    data = json.loads(envelope.encode()) | changes
    return json.dumps(data).encode()


def test_encoded_envelope_decodes_to_an_equal_envelope():
    envelope = order_created()
    assert Envelope.decode(envelope.encode()) == envelope


def test_encoding_is_canonical_sorted_and_compact():
    raw = order_created().encode()
    data = json.loads(raw)
    assert list(data) == sorted(data)
    assert b" " not in raw.replace(b"Retro clock", b"")
    assert raw == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_signing_bytes_cover_every_field_but_the_signature():
    envelope = order_created()
    signed_bytes = json.loads(envelope.signing_bytes())
    assert "signature" not in signed_bytes
    assert set(signed_bytes) == set(Envelope.model_fields) - {"signature"}


def test_module_is_taken_from_the_event_type():
    assert order_created(type="sales.order.shipped").module == "sales"


def test_occurred_at_is_normalised_to_utc():
    local = datetime(2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert order_created(occurred_at=local).occurred_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_decimal_amounts_travel_as_plain_strings():
    envelope = order_created(payload=order_payload(lines=[
        OrderLine(line_no=1, sku="RETRO-CLOCK", quantity=Decimal("1E+2"), unit_price="0.10")
    ]))
    line = json.loads(envelope.encode())["payload"]["lines"][0]
    assert (line["quantity"], line["unit_price"]) == ("100", "0.10")


def test_decimal_amount_sent_as_json_number_is_refused():
    bad_line = {"line_no": 1, "sku": "RETRO-CLOCK", "quantity": 2.5, "unit_price": "1.00"}
    payload = order_payload().model_dump(mode="json") | {"lines": [bad_line]}
    with pytest.raises(EnvelopeMalformed, match="float"):
        Envelope.decode(wire(order_created(), payload=payload))


@pytest.mark.parametrize("changes", [{"sequence": 1.0}, {"payload": {"order_id": "SO-1", "rate": 1e3}}])
def test_a_float_anywhere_in_the_message_is_refused_as_it_is_parsed(changes):
    with pytest.raises(EnvelopeMalformed, match="has no canonical form"):
        Envelope.decode(wire(order_created(), **changes))


def test_no_catalogue_payload_has_a_float_field():
    # Envelope.create dumps a typed payload without searching it for floats (envelope.py).
    def numbers(schema) -> list:
        if isinstance(schema, dict):
            found = [schema] if schema.get("type") == "number" else []
            return found + [n for value in schema.values() for n in numbers(value)]
        if isinstance(schema, list):
            return [n for value in schema for n in numbers(value)]
        return []

    for name, kind in CATALOGUE.items():
        assert numbers(kind.payload_model.model_json_schema(mode="serialization")) == [], name


def test_a_dict_payload_given_to_create_is_searched_for_floats():
    payload = order_payload().model_dump(mode="json") | {"rate": 0.5}
    with pytest.raises((PayloadInvalid, ValidationError)):
        order_created(payload=payload)
    with pytest.raises(ValidationError, match="float"):
        Envelope(**(order_created().model_dump() | {"payload": {"rate": 0.5}}))


def test_the_typed_payload_kept_from_decoding_is_not_that_of_a_copy_with_another_payload():
    envelope = Envelope.decode(order_created().encode())
    assert envelope.typed_payload() == order_payload()
    changed = order_payload(currency="USD").model_dump(mode="json")
    assert envelope.model_copy(update={"payload": changed}).typed_payload().currency == "USD"


def test_decimal_amount_in_exponent_form_is_an_invalid_payload():
    bad_line = {"line_no": 1, "sku": "RETRO-CLOCK", "quantity": "1E+2", "unit_price": "1.00"}
    payload = order_payload().model_dump(mode="json") | {"lines": [bad_line]}
    with pytest.raises(PayloadInvalid, match="quantity"):
        Envelope.decode(wire(order_created(), payload=payload))


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"[1, 2]", b'{"schema_version": 1, "schema_version": 1}',
                                 b'{"schema_version": NaN}'])
def test_malformed_json_is_refused_as_malformed(raw):
    with pytest.raises(EnvelopeMalformed) as caught:
        Envelope.decode(raw)
    assert caught.value.reason == "envelope.malformed"


def test_missing_field_is_refused_as_malformed():
    data = json.loads(order_created().encode())
    del data["sequence"]
    with pytest.raises(EnvelopeMalformed, match="sequence"):
        Envelope.decode(json.dumps(data).encode())


def test_unknown_field_is_refused_as_malformed():
    with pytest.raises(EnvelopeMalformed, match="priority"):
        Envelope.decode(wire(order_created(), priority="high"))


def test_sequence_starts_at_one():
    with pytest.raises(EnvelopeMalformed, match="sequence"):
        Envelope.decode(wire(order_created(), sequence=0))


def test_invalid_tenant_id_is_refused_as_malformed():
    with pytest.raises(EnvelopeMalformed, match="destination"):
        Envelope.decode(wire(order_created(), destination="Bravo Buyer"))


def test_event_to_its_own_source_is_refused():
    with pytest.raises(EnvelopeMalformed, match="same tenant"):
        Envelope.decode(wire(order_created(), destination="acme-seller"))


def test_type_from_another_module_is_refused():
    with pytest.raises(EnvelopeMalformed, match="module"):
        Envelope.decode(wire(order_created(), module="purchasing"))


def test_future_schema_version_is_unsupported():
    with pytest.raises(UnsupportedSchemaVersion) as caught:
        Envelope.decode(wire(order_created(), schema_version=2))
    assert caught.value.reason == "envelope.unsupported_schema_version"


def test_schema_version_that_is_not_an_integer_is_malformed():
    with pytest.raises(EnvelopeMalformed):
        Envelope.decode(wire(order_created(), schema_version="1"))


def test_unknown_event_type_is_refused_with_its_reason():
    with pytest.raises(UnknownEventType) as caught:
        Envelope.decode(wire(order_created(), type="sales.order.teleported"))
    assert caught.value.reason == "event.unknown_type"


def test_payload_that_does_not_match_its_type_is_invalid():
    payload = order_payload().model_dump(mode="json") | {"currency": "euro"}
    with pytest.raises(PayloadInvalid, match="currency"):
        Envelope.decode(wire(order_created(), payload=payload))


def test_aggregate_type_must_match_the_catalogue():
    with pytest.raises(EnvelopeMalformed, match="sales_order"):
        Envelope.decode(wire(order_created(), aggregate_type="purchase_order"))


def test_oversized_envelope_is_refused_before_parsing():
    with pytest.raises(PayloadTooLarge) as caught:
        Envelope.decode(b"{" + b" " * 300_000 + b"}")
    assert caught.value.reason == "envelope.too_large"


def test_size_limit_is_a_parameter():
    raw = order_created().encode()
    with pytest.raises(PayloadTooLarge):
        Envelope.decode(raw, max_bytes=len(raw) - 1)
    assert Envelope.decode(raw, max_bytes=len(raw)) == order_created()


def test_producer_refuses_to_encode_an_oversized_envelope():
    lines = [
        OrderLine(line_no=n, sku=f"SKU-{n}", description="x" * 1000, quantity="1", unit_price="1")
        for n in range(1, 300)
    ]
    with pytest.raises(PayloadTooLarge):
        order_created(payload=order_payload(lines=lines)).encode()


def test_creating_an_envelope_checks_the_payload_schema():
    with pytest.raises(PayloadInvalid):
        order_created(payload={"order_id": "SO-RETRO-1"})


def test_creating_an_envelope_of_an_unknown_type_fails():
    with pytest.raises(UnknownEventType):
        order_created(type="sales.order.teleported")


def test_envelope_is_immutable():
    with pytest.raises(ValidationError):
        order_created().sequence = 2  # type: ignore[misc]


def test_rejected_receipt_needs_a_reason():
    receipt = dict(type="b2b.receipt", source="bravo-buyer", destination="acme-seller",
                   aggregate_type="purchase_order", aggregate_id="PO-9", sequence=1)
    with pytest.raises(PayloadInvalid, match="reason"):
        Envelope.create(**receipt, payload={"event_id": str(EVENT_ID), "outcome": "rejected"})
    accepted = Envelope.create(**receipt, payload={"event_id": str(EVENT_ID), "outcome": "applied"})
    assert Envelope.decode(accepted.encode()).payload["outcome"] == "applied"


def test_catalogue_holds_every_federated_event_type():
    assert set(CATALOGUE) == {
        "sales.order.created", "sales.order.updated", "sales.order.confirmed", "sales.order.shipped",
        "sales.order.cancelled", "purchasing.order.created", "purchasing.order.updated",
        "purchasing.order.cancelled", "purchasing.order.received", "b2b.receipt", "b2b.receipts", "b2b.resync.request",
        "b2b.partner.departed",
    }


def test_published_json_schema_describes_every_envelope_field():
    schema = envelope_json_schema()
    assert set(schema["properties"]) == set(Envelope.model_fields)
    assert set(schema["required"]) >= {"event_id", "type", "source", "destination", "sequence", "payload"}
    assert schema["additionalProperties"] is False


def test_state_hash_ignores_key_order_and_trailing_zeros():
    one = {"state": "confirmed", "lines": [{"sku": "RETRO-CLOCK", "quantity": Decimal("2.50")}]}
    other = {"lines": [{"quantity": Decimal("2.5"), "sku": "RETRO-CLOCK"}], "state": "confirmed"}
    assert state_hash(one) == state_hash(other)
    assert len(state_hash(one)) == 64


def test_state_hash_changes_with_the_state():
    assert state_hash({"state": "confirmed"}) != state_hash({"state": "shipped"})


def test_an_order_hashes_the_same_whatever_the_decimal_scale_description_or_counterpart():
    as_sent = order_payload()
    as_recorded = order_payload(counterpart_order_id="PO-17", lines=[OrderLine(
        line_no=1, sku="RETRO-CLOCK", quantity=Decimal("2.000"), unit_price=Decimal("12.5000"))])
    assert payload_state_hash(as_sent) == payload_state_hash(as_recorded)
    assert payload_state_hash(as_sent) == order_state_hash(
        order_id="SO-RETRO-1", currency="EUR", state="draft", lines=[(1, "RETRO-CLOCK", Decimal("2"), Decimal("12.5"))])
    assert payload_state_hash(as_sent) != payload_state_hash(order_payload(state="confirmed"))
    assert payload_state_hash(as_sent) != payload_state_hash(order_payload(lines=[OrderLine(
        line_no=1, sku="BRAVO-CLOCK", quantity=Decimal("2"), unit_price=Decimal("12.50"))]))


def test_an_order_without_a_counterpart_travels_without_the_field():
    assert "counterpart_order_id" not in order_payload().model_dump(mode="json")
    assert order_payload(counterpart_order_id="17").model_dump(mode="json")["counterpart_order_id"] == "17"
    assert order_created().payload == order_payload().model_dump(mode="json")


def test_state_hash_refuses_floats():
    with pytest.raises(TypeError):
        state_hash({"quantity": 2.5})


def test_an_order_state_hash_is_the_state_hash_of_the_order_as_a_structure():
    lines = [(2, "LAVA-LAMP", Decimal("1.000"), Decimal("12.50")), (1, "RETRO-CLOCK", Decimal("3"), Decimal("0.1000"))]
    structure = {"order_id": "SO-9", "currency": "EUR", "state": "confirmed",
                 "lines": [{"line_no": n, "sku": sku, "quantity": q, "unit_price": p} for n, sku, q, p in sorted(lines)]}
    assert order_state_hash(order_id="SO-9", currency="EUR", state="confirmed", lines=lines) == state_hash(structure)
    with pytest.raises(TypeError, match="float"):
        order_state_hash(order_id="SO-9", currency="EUR", state="confirmed", lines=[(1, "X", 1.5, Decimal("1"))])
