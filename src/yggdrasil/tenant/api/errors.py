"""One place that turns errors into HTTP answers: {"error": {"code", "message", ...}}."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import errors as pg_errors
from starlette.exceptions import HTTPException as StarletteHTTPException

from yggdrasil.tenant import errors
from yggdrasil.tenant.api.database import is_connection_failure
from yggdrasil.tenant.api.deps import AuthError, RateLimited
from yggdrasil.tenant.api.ratelimit import RateLimiter
from yggdrasil.tenant.messages import message

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
}


def error_body(code: str, text: str, **extra: object) -> dict:
    return {"error": {"code": code, "message": text, **extra}}


def install_error_handlers(app: FastAPI) -> None:
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

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"location": ".".join(str(part) for part in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['location']}: {p['problem']}" for p in problems[:5])
        return JSONResponse(error_body("request.invalid", f"the request is invalid: {summary}", problems=problems),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "route.not_found", 405: "route.method_not_allowed"}.get(exc.status_code, "request.invalid")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        # The safety net under explicit validation: a value the database refuses is the
        # client's problem (4xx), a lost connection is ours (503); neither is a 500.
        if is_connection_failure(exc):
            return JSONResponse(error_body("database.unavailable", message("database.unavailable")),
                                status_code=503, headers={"Retry-After": "1"})
        detail = exc.diag.message_primary if getattr(exc, "diag", None) else str(exc)
        if isinstance(exc, (pg_errors.UniqueViolation, pg_errors.ExclusionViolation)):
            return JSONResponse(error_body("resource.conflict", f"already exists: {exc.diag.message_detail or detail}"),
                                status_code=409)
        if isinstance(exc, pg_errors.ForeignKeyViolation) and "still referenced" in (exc.diag.message_detail or ""):
            return JSONResponse(error_body("resource.conflict", f"still in use: {exc.diag.message_detail}"),
                                status_code=409)
        if isinstance(exc, (pg_errors.IntegrityError, pg_errors.DataError)):
            return JSONResponse(error_body("database.rejected", message("database.rejected", detail=detail)),
                                status_code=422)
        log.exception("unexpected database error")
        return JSONResponse(error_body("internal", "internal error; the request id is in the server log"),
                            status_code=500)
