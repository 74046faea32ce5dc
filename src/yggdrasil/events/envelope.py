"""The versioned envelope every federated event travels in, and its one wire encoding.

The wire form is canonical JSON (see canonical.py) of all fields. The signature is computed
over the canonical JSON of every field except `signature` itself, so any change to any other
field, including the routing fields, breaks it.

Canonical JSON has no floats, and an envelope never holds one, whichever way it was made:
`decode` refuses a float anywhere in the message as it parses; `create` from a typed payload
has none to dump (no catalogue payload has a float field: tests/unit/events); a payload given
as a dict is searched for floats. So encoding, for the wire and for the signature, does not
search again: a receiver verifies every event, and the search cost as much as the encoding.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from yggdrasil.events.canonical import canonical_json, encode_float_free
from yggdrasil.events.catalogue import Payload, event_type, validate_payload
from yggdrasil.events.errors import (
    EnvelopeMalformed,
    PayloadTooLarge,
    UnsupportedSchemaVersion,
    summarise_validation_error,
)

SCHEMA_VERSION = 1
DEFAULT_MAX_BYTES = 256 * 1024

# The same pattern as yggdrasil.broker.subjects; events/ imports nothing of ours.
TenantId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")]

# Validation context: the payload is known to hold no float (see the module docstring).
_FLOAT_FREE = {"float_free": True}


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: UUID
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=100)
    module: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: TenantId
    destination: TenantId
    aggregate_type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    aggregate_id: str = Field(min_length=1, max_length=100)
    # 1, 2, 3 ... per aggregate and source: the destination applies in this order.
    sequence: int = Field(ge=1)
    occurred_at: AwareDatetime
    payload: dict[str, Any]
    # sha256 hex of the source's order state after this event; None for non-order events.
    state_hash: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    key_id: str = Field("", pattern=r"^([0-9a-f]{16})?$")
    signature: str = ""

    # The typed payload, kept with the dict it was read from: a copy made with another
    # payload (model_copy does not validate) does not match it, and validates its own.
    _typed: tuple[dict[str, Any], Payload] | None = PrivateAttr(None)

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("payload")
    @classmethod
    def _has_canonical_form(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.context is _FLOAT_FREE:
            return value
        try:
            canonical_json(value)
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _consistent_routing(self) -> "Envelope":
        if self.type.split(".", 1)[0] != self.module:
            raise ValueError(f"type {self.type!r} does not belong to module {self.module!r}")
        if self.source == self.destination:
            raise ValueError("source and destination are the same tenant")
        return self

    @classmethod
    def create(
        cls,
        *,
        type: str,
        source: str,
        destination: str,
        aggregate_id: str,
        sequence: int,
        payload: Payload | dict[str, Any],
        aggregate_type: str | None = None,
        state_hash: str | None = None,
        event_id: UUID | None = None,
        occurred_at: datetime | None = None,
    ) -> "Envelope":
        """A new, unsigned envelope for a catalogued type; the payload is checked against its
        schema. Raises UnknownEventType, PayloadInvalid, or pydantic's ValidationError."""
        kind = event_type(type)
        # A payload of the type's own model was checked when it was made: dumped, not checked again.
        typed = payload if isinstance(payload, kind.payload_model) else None
        data = payload.model_dump(mode="json") if isinstance(payload, Payload) else payload
        if typed is None:
            typed = validate_payload(type, data)
        envelope = cls.model_validate({
            "event_id": event_id or uuid4(),
            "type": type,
            "module": kind.module,
            "source": source,
            "destination": destination,
            "aggregate_type": aggregate_type or kind.aggregate_type,
            "aggregate_id": aggregate_id,
            "sequence": sequence,
            "occurred_at": occurred_at or datetime.now(UTC),
            "payload": data,
            "state_hash": state_hash,
        }, context=_FLOAT_FREE if isinstance(payload, Payload) else None)
        envelope._typed = (envelope.payload, typed)
        return envelope

    def signing_bytes(self) -> bytes:
        """The canonical encoding the signature covers: every field except `signature`."""
        return encode_float_free(self.model_dump(mode="json", exclude={"signature"}))

    def encode(self, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """The wire form. Raises PayloadTooLarge rather than emit what receivers would refuse."""
        raw = encode_float_free(self.model_dump(mode="json"))
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"{len(raw)} bytes exceeds the limit of {max_bytes}")
        return raw

    @classmethod
    def decode(cls, raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> "Envelope":
        """Parse and check an envelope from the wire: size, JSON, schema version, fields, known
        type, payload schema. Does not check the signature (see signing.verify_envelope).

        Raises PayloadTooLarge, EnvelopeMalformed, UnsupportedSchemaVersion, UnknownEventType
        or PayloadInvalid; each carries a stable `reason` code for the quarantine.
        """
        # Size first: nothing is parsed from an oversized message.
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"{len(raw)} bytes exceeds the limit of {max_bytes}")
        try:
            data = json.loads(raw.decode("utf-8"), object_pairs_hook=_refuse_duplicate_keys,
                              parse_constant=_refuse_constant, parse_float=_refuse_float)
        except _FloatRefused as error:
            raise EnvelopeMalformed(str(error)) from None
        except (UnicodeDecodeError, ValueError) as error:
            raise EnvelopeMalformed(f"not UTF-8 JSON: {error}") from None
        if not isinstance(data, dict):
            raise EnvelopeMalformed("not a JSON object")
        version = data.get("schema_version")
        if type(version) is not int:
            raise EnvelopeMalformed(f"schema_version must be an integer, got {version!r}")
        if version != SCHEMA_VERSION:
            raise UnsupportedSchemaVersion(f"schema_version {version}; this build reads {SCHEMA_VERSION}")
        try:
            envelope = cls.model_validate(data, context=_FLOAT_FREE)
        except ValidationError as error:
            raise EnvelopeMalformed(summarise_validation_error(error)) from None
        kind = event_type(envelope.type)
        if kind.aggregate_type and envelope.aggregate_type != kind.aggregate_type:
            raise EnvelopeMalformed(
                f"{envelope.type} concerns a {kind.aggregate_type}, not a {envelope.aggregate_type}"
            )
        envelope._typed = (envelope.payload, validate_payload(envelope.type, envelope.payload))
        return envelope

    def typed_payload(self) -> Payload:
        """The payload as its type's model; raises PayloadInvalid (not for a decoded envelope,
        whose payload was checked and is kept typed)."""
        if self._typed is not None and self._typed[0] is self.payload:
            return self._typed[1]
        return validate_payload(self.type, self.payload)


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; the signer and the verifier must not.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _FloatRefused(ValueError):
    pass


def _refuse_float(text: str) -> Any:
    raise _FloatRefused(f"float {text} has no canonical form; amounts travel as decimal strings")


def envelope_json_schema() -> dict[str, Any]:
    """The published JSON Schema of the envelope (version 1)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **Envelope.model_json_schema(),
        "title": f"Yggdrasil event envelope, schema version {SCHEMA_VERSION}",
    }
