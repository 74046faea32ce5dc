"""The error answers every server gives, in one envelope: `{"error": {"code", "message", ...}}`.

`install_error_handlers` covers what is the same for all servers: a malformed request (422
`request.invalid` with the problems listed), an unknown route or method, and the database's
failures (503 `database.unavailable`, 422 `database.rejected`, else a logged 500). Each server
still maps its own domain errors to status codes in its `api/errors.py`.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from yggdrasil.web.database import is_connection_failure

INTERNAL_ERROR = "internal error; the request id is in the server log"
_ROUTE_ERROR_CODES = {404: "route.not_found", 405: "route.method_not_allowed"}


def error_body(code: str, message: str, **extra: object) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


class Answer(Protocol):
    """Turns an error into a response: JSON for an API, an error page for a browser."""

    def __call__(self, request: Request, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None, **extra: object) -> Response: ...


def json_answer(request: Request, status: int, code: str, message: str,
                headers: dict[str, str] | None = None, **extra: object) -> Response:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def _no_conflict(exc: psycopg.Error) -> str | None:
    return None


@dataclass(frozen=True)
class DatabaseFailures:
    """How one server words its database's failures; the codes are the same for all servers.

    `rejected` is a template with `{detail}` (the database's own message). `conflict` may
    recognize a refusal that is a clash with existing rows rather than a bad value: it returns
    the message of a 409 `resource.conflict`, or None."""

    unavailable: str
    rejected: str
    retry_after_seconds: int = 1
    is_unavailable: Callable[[BaseException], bool] = is_connection_failure
    conflict: Callable[[psycopg.Error], str | None] = _no_conflict


def install_error_handlers(app: FastAPI, database: DatabaseFailures, log: logging.Logger,
                           answer: Answer = json_answer) -> None:
    """Register the shared handlers. `log` is the server's own logger, for the unexpected
    database errors that become a 500."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"location": ".".join(str(part) for part in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['location']}: {p['problem']}" for p in problems[:5])
        return answer(request, 422, "request.invalid", f"the request is invalid: {summary}", problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _ROUTE_ERROR_CODES.get(exc.status_code, "request.invalid")
        return answer(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    # psycopg_pool's PoolTimeout is a psycopg.OperationalError: no pool slot in time lands here too.
    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> Response:
        # The safety net under explicit validation: a value the database refuses is the
        # client's problem (4xx), a lost connection is ours (503); neither is a 500.
        if database.is_unavailable(exc):
            return answer(request, 503, "database.unavailable", database.unavailable,
                          {"Retry-After": str(database.retry_after_seconds)})
        if (conflict := database.conflict(exc)) is not None:
            return answer(request, 409, "resource.conflict", conflict)
        if isinstance(exc, psycopg.IntegrityError | psycopg.DataError):
            # A refusal raised by psycopg itself (a NUL byte in text, say) has no server message.
            detail = exc.diag.message_primary or str(exc)
            return answer(request, 422, "database.rejected", database.rejected.format(detail=detail))
        log.exception("unexpected database error")
        return answer(request, 500, "internal", INTERNAL_ERROR)
