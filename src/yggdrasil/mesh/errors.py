"""The mesh's domain errors. Each carries a stable code (the same in API bodies and logs) and a
message for people; the HTTP layer maps the classes to status codes in one place."""

from __future__ import annotations


class MeshError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class NotFound(MeshError):
    pass


class Conflict(MeshError):
    """The request contradicts the current state (a transition that is not allowed, a proposal
    that exists)."""


class InvalidInput(MeshError):
    pass


class Unauthenticated(MeshError):
    pass


class Forbidden(MeshError):
    pass


class TenantUnreachable(MeshError):
    """The proxy could not reach the tenant server (refused, reset, bad answer)."""


class TenantTimeout(MeshError):
    """The tenant server did not answer the proxy in time."""
