"""Support tickets: open or closed, and who may be assigned."""

from __future__ import annotations

from yggdrasil.portal.errors import Conflict, InvalidInput

STATUSES = ("open", "closed")
TRANSITIONS = frozenset({("open", "closed"), ("closed", "open")})
# Who can take a ticket: the organization's own admins and owners (support staff of the
# operator are not portal users; see docs/portal/design.md).
ASSIGNABLE_ROLES = ("admin", "owner")

SUBJECT_MAX = 300
BODY_MAX = 20_000


def check_transition(current: str, target: str) -> None:
    if (current, target) not in TRANSITIONS:
        raise Conflict(f"the ticket is already {current}", code="ticket.invalid_transition")


def check_status_filter(status: str | None) -> str | None:
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown ticket status {status!r}; statuses are: {', '.join(STATUSES)}")
    return status


def check_assignee_role(role: str | None) -> None:
    if role not in ASSIGNABLE_ROLES:
        raise InvalidInput("a ticket can only be assigned to an admin or owner of its organization",
                           code="ticket.assignee_invalid")


def check_text(field: str, value: str, maximum: int) -> str:
    """Stored exactly as given (no trimming, no escaping); only emptiness and length are refused."""
    if not value or not value.strip():
        raise InvalidInput(f"{field} must not be empty")
    if len(value) > maximum:
        raise InvalidInput(f"{field} is longer than {maximum} characters")
    return value
