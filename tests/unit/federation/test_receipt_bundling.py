"""How the publisher cuts claimed outbox rows into broker messages: a run of receipts for one
destination becomes one signed bundle; everything else, and a lone receipt, goes as it is, in
claim order; a bundle over the size limit is split."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yggdrasil.events.catalogue import ReceiptBundlePayload, ReceiptPayload
from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import sign_envelope, verify_envelope
from yggdrasil.federation.publisher import _messages
from yggdrasil.federation.receipts import ReceiptBundler

pytestmark = pytest.mark.unit

KEY = Ed25519PrivateKey.generate()
ME = "bravo"


def receipt_row(row_id: int, destination: str, reason_length: int = 0) -> tuple:
    answered = uuid.uuid4()
    envelope = sign_envelope(Envelope.create(
        type="b2b.receipt", source=ME, destination=destination, aggregate_type="b2b_event",
        aggregate_id=str(answered), sequence=1,
        payload=ReceiptPayload(event_id=answered, outcome="rejected" if reason_length else "applied",
                               reason="x" * reason_length or None)), KEY)
    return (row_id, envelope.event_id, f"ygg.events.b2b.{destination}.{ME}", envelope.encode(), 0,
            "b2b.receipt", destination)


def other_row(row_id: int) -> tuple:
    event_id = uuid.uuid4()
    return (row_id, event_id, f"ygg.events.purchasing.acme.{ME}", b"{}", 2, "purchasing.order.created", "acme")


def items(data: bytes) -> list:
    envelope = Envelope.decode(data)
    verify_envelope(envelope, KEY.public_key())
    payload = envelope.typed_payload()
    assert isinstance(payload, ReceiptBundlePayload)
    return payload.receipts


def test_runs_of_receipts_per_destination_become_bundles_in_claim_order():
    rows = [receipt_row(1, "acme"), receipt_row(2, "acme"), receipt_row(3, "acme"), other_row(4),
            receipt_row(5, "acme"), receipt_row(6, "cargo"), receipt_row(7, "cargo")]

    messages = _messages(rows, ReceiptBundler(ME, KEY))

    assert [m.row_ids for m in messages] == [[1, 2, 3], [4], [5], [6, 7]]
    assert [m.subject for m in messages] == [rows[0][2], rows[3][2], rows[4][2], rows[5][2]]
    assert [item.receipt_id for item in items(messages[0].data)] == [row[1] for row in rows[:3]]
    # A lone receipt and any other event travel as stored, under their own message id.
    assert (messages[1].data, messages[1].message_id) == (b"{}", f"{rows[3][1]}:replay:2")
    assert (messages[2].data, messages[2].message_id) == (rows[4][3], str(rows[4][1]))
    assert Envelope.decode(messages[3].data).destination == "cargo"


def test_without_a_bundler_every_row_is_its_own_message():
    rows = [receipt_row(1, "acme"), receipt_row(2, "acme")]
    assert [m.data for m in _messages(rows, None)] == [rows[0][3], rows[1][3]]


def test_a_bundle_over_the_size_limit_is_split_and_each_part_stays_under_it():
    rows = [receipt_row(n, "acme", reason_length=1500) for n in range(1, 9)]

    messages = _messages(rows, ReceiptBundler(ME, KEY, max_bytes=5000))

    assert len(messages) > 1
    assert all(len(m.data) <= 5000 for m in messages)
    assert [row_id for m in messages for row_id in m.row_ids] == list(range(1, 9))
    assert [item.receipt_id for m in messages for item in items(m.data)] == [row[1] for row in rows]


def test_receipts_too_large_to_bundle_even_alone_go_as_stored():
    rows = [receipt_row(n, "acme", reason_length=1900) for n in (1, 2)]
    limit = max(len(row[3]) for row in rows) + 10  # each fits alone; a bundle of one does not

    messages = _messages(rows, ReceiptBundler(ME, KEY, max_bytes=limit))

    assert [(m.row_ids, m.data, m.message_id) for m in messages] == [
        ([row[0]], row[3], str(row[1])) for row in rows]
