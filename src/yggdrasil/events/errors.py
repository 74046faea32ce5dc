"""Why an inbound event was refused. Each error carries a stable reason code: the same string
appears in quarantine rows, receipts, API error bodies and logs."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationError


class EventRejected(Exception):
    reason: ClassVar[str] = "event.rejected"

    def __init__(self, detail: str = ""):
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


class EnvelopeMalformed(EventRejected):
    reason = "envelope.malformed"


class UnsupportedSchemaVersion(EventRejected):
    reason = "envelope.unsupported_schema_version"


class PayloadTooLarge(EventRejected):
    reason = "envelope.too_large"


class UnknownEventType(EventRejected):
    reason = "event.unknown_type"


class PayloadInvalid(EventRejected):
    reason = "event.payload_invalid"


class SignatureInvalid(EventRejected):
    reason = "signature.invalid"


class SignatureMissing(SignatureInvalid):
    reason = "signature.missing"


def summarise_validation_error(error: ValidationError) -> str:
    """One line per failing field, for quarantine reasons and logs."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}" for item in error.errors()
    )
