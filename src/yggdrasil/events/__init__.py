"""The contract between tenants: the event envelope, the event catalogue, and signatures.

Imports nothing else of ours, so that the tenant, the sidecar and ops can all depend on it.
"""

from yggdrasil.events.canonical import canonical_json, state_hash
from yggdrasil.events.catalogue import (
    CATALOGUE,
    OrderLine,
    OrderPayload,
    ReceiptPayload,
    ResyncRequestPayload,
    order_state_hash,
    payload_state_hash,
)
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES, SCHEMA_VERSION, Envelope, envelope_json_schema
from yggdrasil.events.errors import (
    EnvelopeMalformed,
    EventRejected,
    PayloadInvalid,
    PayloadTooLarge,
    SignatureInvalid,
    SignatureMissing,
    UnknownEventType,
    UnsupportedSchemaVersion,
)
from yggdrasil.events.signing import generate_keypair, key_id, sign_envelope, verify_envelope

__all__ = [
    "CATALOGUE", "DEFAULT_MAX_BYTES", "SCHEMA_VERSION", "Envelope", "EnvelopeMalformed", "EventRejected",
    "OrderLine", "OrderPayload", "PayloadInvalid", "PayloadTooLarge", "ReceiptPayload",
    "ResyncRequestPayload", "SignatureInvalid", "SignatureMissing", "UnknownEventType",
    "UnsupportedSchemaVersion", "canonical_json", "envelope_json_schema", "generate_keypair",
    "key_id", "order_state_hash", "payload_state_hash", "sign_envelope", "state_hash", "verify_envelope",
]
