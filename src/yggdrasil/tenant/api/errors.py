"""The tenant server's error answers: its domain errors, authentication and rate limits mapped to
status codes here; malformed requests, unknown routes and database failures as every server
answers them (yggdrasil.web.errors). All in the envelope {"error": {"code", "message", ...}}."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg import errors as pg_errors

from yggdrasil.tenant import errors
from yggdrasil.tenant.api.deps import AuthError, RateLimited
from yggdrasil.tenant.api.ratelimit import RateLimiter
from yggdrasil.tenant.messages import MESSAGES, message
from yggdrasil.web import errors as web_errors
from yggdrasil.web.errors import error_body

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.TenantError], int] = {
    errors.NotFound: 404,
    errors.ReferenceUnknown: 422,
    errors.StaleVersion: 409,
    errors.Conflict: 409,
    errors.InvalidTransition: 409,
    errors.NotEditable: 409,
    errors.InsufficientStock: 409,
    errors.InvalidInput: 422,
    errors.DatabaseUnavailable: 503,
    errors.FederationNotConfigured: 503,
    errors.ModuleNotAgreed: 409,
}


def _conflict(exc: psycopg.Error) -> str | None:
    """A duplicate, or a row still referenced by others: the client's conflict (409), not a bad value."""
    detail = exc.diag.message_detail
    if isinstance(exc, pg_errors.UniqueViolation | pg_errors.ExclusionViolation):
        return f"already exists: {detail or exc.diag.message_primary}"
    if isinstance(exc, pg_errors.ForeignKeyViolation) and "still referenced" in (detail or ""):
        return f"still in use: {detail}"
    return None


DATABASE_FAILURES = web_errors.DatabaseFailures(
    unavailable=message("database.unavailable"), rejected=MESSAGES["database.rejected"], conflict=_conflict,
)


def install_error_handlers(app: FastAPI) -> None:
    web_errors.install_error_handlers(app, DATABASE_FAILURES, log)

    @app.exception_handler(errors.TenantError)
    async def tenant_error(request: Request, exc: errors.TenantError) -> JSONResponse:
        status = STATUS_BY_ERROR.get(type(exc), 400)
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(error_body(exc.message_id, str(exc)), status_code=status, headers=headers)

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc.message_id, message(exc.message_id, **exc.params)),
                            status_code=exc.status, headers=headers)

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> JSONResponse:
        retry_after = RateLimiter.retry_after_header(exc.retry_after)
        return JSONResponse(error_body("request.rate_limited", message("request.rate_limited", retry_after=retry_after)),
                            status_code=429, headers={"Retry-After": retry_after})
