"""The portal's errors. Each carries a stable code (for API clients and logs) and a message for
people; the HTTP layer maps the class to a status code in one place (api/errors.py)."""

from __future__ import annotations


class PortalError(Exception):
    code = "portal.error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(PortalError):
    """The object does not exist, or the caller may not know that it does (another
    organization's): both answer the same, so existence is never revealed."""

    code = "resource.not_found"


class Forbidden(PortalError):
    """The caller can see the object but their role does not allow the action."""

    code = "permission.denied"


class Conflict(PortalError):
    """The request is valid but the current state refuses it (seat limit, last owner, ...)."""

    code = "state.conflict"


class InvalidInput(PortalError):
    code = "request.invalid"


class AuthenticationRequired(PortalError):
    code = "auth.required"


class LoginFailed(PortalError):
    """Wrong email or password: one message for both, so it does not tell which emails exist."""

    code = "auth.login_failed"


class LoginThrottled(PortalError):
    code = "auth.throttled"

    def __init__(self, retry_after_seconds: int):
        super().__init__(
            f"too many failed sign-in attempts; try again in {retry_after_seconds} seconds"
        )
        self.retry_after_seconds = retry_after_seconds


class CsrfRefused(PortalError):
    code = "csrf.refused"
