"""The relay's checks on an inbound message, before any database work: each failure has its
reason code, the one that lands in the quarantine."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from yggdrasil.events import Envelope, EventRejected, generate_keypair, sign_envelope
from yggdrasil.events.signing import encode_public_key, key_id
from yggdrasil.federation.errors import ApplyRefused
from yggdrasil.federation.orders import check_order_payload
from yggdrasil.federation.partners import Partner
from yggdrasil.federation.relay import InboundMessage, redelivery_delay, verify_message

pytestmark = pytest.mark.unit

SELLER, BUYER = "acme-seller", "bravo-buyer"
SELLER_KEY, SELLER_PUBLIC = generate_keypair()
SUBJECT = f"ygg.events.sales.{BUYER}.{SELLER}"


def partner(status: str = "active") -> Partner:
    return Partner(SELLER, "ACME Seller", encode_public_key(SELLER_PUBLIC), key_id(SELLER_PUBLIC), "auto", status)


def created(quantity: str = "3", **changes: object) -> Envelope:
    payload = {"order_id": "SO-RETRO-1", "currency": "EUR", "state": "draft",
               "lines": [{"line_no": 1, "sku": "RETRO-CLOCK", "quantity": quantity, "unit_price": "19.90"}]}
    envelope = Envelope.create(type="sales.order.created", source=SELLER, destination=BUYER,
                               aggregate_id="SO-RETRO-1", sequence=1, payload=payload,
                               occurred_at=datetime(2025, 3, 1, tzinfo=UTC))
    return sign_envelope(envelope.model_copy(update=changes), SELLER_KEY)


def reason(subject: str, data: bytes, partners: dict[str, Partner] | None = None) -> str:
    with pytest.raises(EventRejected) as caught:
        verify_message(InboundMessage(subject, data), {SELLER: partner()} if partners is None else partners, BUYER)
    return caught.value.reason


def test_a_signed_event_from_an_active_partner_passes_every_check():
    sent = created()
    envelope, found = verify_message(InboundMessage(SUBJECT, sent.encode()), {SELLER: partner()}, BUYER)
    assert envelope == sent
    assert found.tenant_id == SELLER


@pytest.mark.parametrize(("case", "subject", "data", "partners", "expected"), [
    ("not an event subject", "ygg.other.thing", created().encode(), None, "subject.invalid"),
    ("unknown source", f"ygg.events.sales.{BUYER}.charlie-unknown", created().encode(), None, "partner.unknown"),
    ("suspended partner", SUBJECT, created().encode(), {SELLER: partner("suspended")}, "partner.inactive"),
    ("malformed JSON", SUBJECT, b"{nope", None, "envelope.malformed"),
    ("future schema", SUBJECT, b'{"schema_version": 2}', None, "envelope.unsupported_schema_version"),
    ("oversized", SUBJECT, b" " * (256 * 1024 + 1), None, "envelope.too_large"),
    ("unknown type", SUBJECT, created().model_copy(update={"type": "sales.order.teleported"}).encode(), None,
     "event.unknown_type"),
    ("subject names another module", f"ygg.events.purchasing.{BUYER}.{SELLER}", created().encode(), None,
     "envelope.subject_mismatch"),
    ("addressed to someone else", SUBJECT, created(destination="delta-other").encode(), None, "envelope.misrouted"),
    ("forged signature", SUBJECT, sign_envelope(created(), generate_keypair()[0]).encode(), None, "signature.invalid"),
    ("unsigned", SUBJECT, created().model_copy(update={"signature": "", "key_id": ""}).encode(), None,
     "signature.missing"),
])
def test_a_message_failing_a_check_is_refused_with_its_reason(case, subject, data, partners, expected):
    assert reason(subject, data, partners) == expected, case


def test_a_quantity_finer_than_the_buyer_can_store_is_refused_before_anything_is_written():
    with pytest.raises(ApplyRefused) as caught:
        check_order_payload(created(quantity="1.0005"))
    assert caught.value.reason == "order.line_invalid"
    assert check_order_payload(created(quantity="1.500")).lines[0].quantity == 1.5


def test_redelivery_after_a_database_outage_backs_off_to_thirty_seconds():
    assert [redelivery_delay(n) for n in (1, 2, 3, 6, 50)] == [1.0, 2.0, 4.0, 30.0, 30.0]
