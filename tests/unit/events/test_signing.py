import base64
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from yggdrasil.events import (
    Envelope,
    OrderLine,
    OrderPayload,
    SignatureInvalid,
    SignatureMissing,
    generate_keypair,
    key_id,
    sign_envelope,
    verify_envelope,
)
from yggdrasil.events.signing import decode_private_key, decode_public_key, encode_private_key, encode_public_key

pytestmark = pytest.mark.unit

SELLER_KEY, SELLER_PUBLIC = generate_keypair()
INTRUDER_KEY, _ = generate_keypair()


def order_confirmed() -> Envelope:
    return Envelope.create(
        type="sales.order.confirmed", source="acme-seller", destination="bravo-buyer",
        aggregate_id="SO-RETRO-1", sequence=2, occurred_at=datetime(2025, 3, 1, tzinfo=UTC),
        payload=OrderPayload(order_id="SO-RETRO-1", currency="EUR", state="confirmed", lines=[
            OrderLine(line_no=1, sku="RETRO-CLOCK", quantity=Decimal("2"), unit_price=Decimal("12.50"))
        ]),
    )


def tampered(envelope: Envelope, **changes) -> Envelope:
    """The envelope as a receiver would decode it after someone edited the bytes in transit."""
    return Envelope.decode(json.dumps(json.loads(envelope.encode()) | changes).encode())


def test_signed_envelope_verifies_after_a_round_trip_through_the_wire():
    signed = sign_envelope(order_confirmed(), SELLER_KEY)
    verify_envelope(Envelope.decode(signed.encode()), SELLER_PUBLIC)


def test_signed_envelope_names_its_key():
    signed = sign_envelope(order_confirmed(), SELLER_KEY)
    assert signed.key_id == key_id(SELLER_PUBLIC)
    assert len(signed.key_id) == 16


def test_tampered_payload_fails_signature_check():
    signed = sign_envelope(order_confirmed(), SELLER_KEY)
    payload = signed.payload | {"currency": "USD"}
    with pytest.raises(SignatureInvalid) as caught:
        verify_envelope(tampered(signed, payload=payload), SELLER_PUBLIC)
    assert caught.value.reason == "signature.invalid"


@pytest.mark.parametrize("field, value", [("destination", "charlie-buyer"), ("sequence", 3),
                                          ("state_hash", "b" * 64), ("occurred_at", "2025-03-02T00:00:00Z")])
def test_tampered_routing_or_metadata_fails_signature_check(field, value):
    signed = sign_envelope(order_confirmed(), SELLER_KEY)
    with pytest.raises(SignatureInvalid):
        verify_envelope(tampered(signed, **{field: value}), SELLER_PUBLIC)


def test_envelope_signed_by_another_key_fails_signature_check():
    forged = sign_envelope(order_confirmed(), INTRUDER_KEY)
    with pytest.raises(SignatureInvalid, match="key"):
        verify_envelope(forged, SELLER_PUBLIC)


def test_forged_signature_under_the_sources_key_id_fails():
    forged = sign_envelope(order_confirmed(), INTRUDER_KEY).model_copy(update={"key_id": key_id(SELLER_PUBLIC)})
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify_envelope(forged, SELLER_PUBLIC)


def test_signature_that_is_not_base64_fails_signature_check():
    signed = sign_envelope(order_confirmed(), SELLER_KEY)
    with pytest.raises(SignatureInvalid):
        verify_envelope(signed.model_copy(update={"signature": "not base64!"}), SELLER_PUBLIC)


@pytest.mark.parametrize("length", [0, 63, 65])
def test_signature_of_the_wrong_length_fails_signature_check(length):
    signed = sign_envelope(order_confirmed(), SELLER_KEY)
    short = base64.b64encode(b"\x01" * length).decode() or "AA=="
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify_envelope(signed.model_copy(update={"signature": short}), SELLER_PUBLIC)


def test_signatures_are_the_rfc_8032_ones_any_ed25519_library_makes_and_checks():
    # Signed through libsodium; a partner running OpenSSL (cryptography) must get the same
    # bytes and accept them, and we must accept what it signs.
    signed = sign_envelope(order_confirmed(), SELLER_KEY)
    unsigned = signed.model_copy(update={"signature": ""})
    assert base64.b64decode(signed.signature) == SELLER_KEY.sign(unsigned.signing_bytes())
    SELLER_PUBLIC.verify(base64.b64decode(signed.signature), unsigned.signing_bytes())
    by_openssl = unsigned.model_copy(update={"signature": base64.b64encode(
        SELLER_KEY.sign(unsigned.signing_bytes())).decode()})
    verify_envelope(Envelope.decode(by_openssl.encode()), SELLER_PUBLIC)


def test_unsigned_envelope_is_refused_as_missing_signature():
    with pytest.raises(SignatureMissing) as caught:
        verify_envelope(order_confirmed(), SELLER_PUBLIC)
    assert caught.value.reason == "signature.missing"
    assert isinstance(caught.value, SignatureInvalid)


def test_keys_survive_their_text_form():
    private_copy = decode_private_key(encode_private_key(SELLER_KEY))
    public_copy = decode_public_key(encode_public_key(SELLER_PUBLIC))
    verify_envelope(sign_envelope(order_confirmed(), private_copy), public_copy)


@pytest.mark.parametrize("text", ["not base64!", "c2hvcnQ="])
def test_public_key_text_that_is_not_a_key_is_refused(text):
    with pytest.raises(ValueError):
        decode_public_key(text)
