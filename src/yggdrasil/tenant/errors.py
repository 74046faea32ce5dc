"""The tenant's domain and service errors. The HTTP layer maps them to status codes in one place
(`api/errors.py`); each carries a message id from `messages.py`."""

from __future__ import annotations

from yggdrasil.tenant.messages import message


class TenantError(Exception):
    message_id = "request.invalid"

    def __init__(self, message_id: str | None = None, **params: object):
        self.message_id = message_id or self.message_id
        self.params = params
        super().__init__(message(self.message_id, **params))


class NotFound(TenantError):
    message_id = "resource.not_found"


class ReferenceUnknown(TenantError):
    """A request names another record (a customer, an item) that does not exist."""

    message_id = "resource.reference_unknown"


class StaleVersion(TenantError):
    message_id = "resource.stale_version"


class Conflict(TenantError):
    message_id = "resource.conflict"


class InvalidTransition(TenantError):
    message_id = "order.invalid_transition"


class NotEditable(TenantError):
    message_id = "order.not_editable"


class InsufficientStock(TenantError):
    message_id = "stock.insufficient"


class InvalidInput(TenantError):
    message_id = "request.invalid"


class DatabaseUnavailable(TenantError):
    message_id = "database.unavailable"
    # True when the connection died after work was sent: a commit may have happened.
    outcome_unknown = False


class FederationNotConfigured(TenantError):
    """An order for a partner tenant, but this server has no signing key to send it with."""

    message_id = "federation.not_configured"


class ModuleNotAgreed(TenantError):
    """An order for a partner tenant whose partnership does not cover the event's module."""

    message_id = "federation.module_not_agreed"
