"""Why the sidecar refused an inbound event, beyond the envelope's own checks (events/errors.py).

Two families, handled differently by the relay:
  * a failed *check* (unknown or inactive partner, subject that contradicts the envelope,
    forged signature, ...): the sender is not trusted, so the message is quarantined and
    terminated at the broker, and nothing is sent back;
  * an *application* refusal (`ApplyRefused`) of a verified event whose content we cannot
    record: it is quarantined too, its sequence number is used up, and the source gets a
    `rejected` receipt with the reason, so the seller sees it.
"""

from __future__ import annotations

from yggdrasil.events.errors import EventRejected


class SubjectInvalid(EventRejected):
    reason = "subject.invalid"


class PartnerUnknown(EventRejected):
    reason = "partner.unknown"


class PartnerInactive(EventRejected):
    reason = "partner.inactive"


class PartnerModuleNotAgreed(EventRejected):
    """The partnership does not cover the event's module (the mesh's `modules`)."""

    reason = "partner.module_not_agreed"


class SubjectMismatch(EventRejected):
    """The subject (which the broker's permissions vouch for) names another source, module or
    destination than the envelope."""

    reason = "envelope.subject_mismatch"


class Misrouted(EventRejected):
    reason = "envelope.misrouted"


class InternalError(EventRejected):
    """A bug of ours while applying: kept in quarantine so the event is not lost."""

    reason = "relay.internal_error"


class ApplyRefused(EventRejected):
    """A verified event whose content cannot be recorded. `reason` is set per instance."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason  # type: ignore[misc]
        super().__init__(detail)
