"""One place that turns errors into answers: `{"error": {"code", "message"}}` for the API and
operations endpoints, an error page (or a redirect to sign in) for the web pages."""

import logging
from urllib.parse import quote

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from yggdrasil.portal import errors
from yggdrasil.portal.api.pages import Pages

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.PortalError], int] = {
    errors.NotFound: 404,
    errors.Forbidden: 403,
    errors.Conflict: 409,
    errors.InvalidInput: 422,
    errors.AuthenticationRequired: 401,
    errors.LoginFailed: 401,
    errors.LoginThrottled: 429,
    errors.CsrfRefused: 403,
}
_JSON_PREFIXES = ("/api/", "/health", "/metrics", "/docs", "/openapi.json")
DATABASE_DOWN = "the portal's database is unreachable; try again in a moment"


def error_body(code: str, message: str, **extra: object) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(_JSON_PREFIXES)


def is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout | psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        sqlstate = getattr(exc, "sqlstate", None)
        return sqlstate is None or sqlstate.startswith(("08", "57P"))
    return False


def install_error_handlers(app: FastAPI, pages: Pages) -> None:
    def answer(request: Request, status: int, code: str, message: str,
               headers: dict[str, str] | None = None, **extra: object) -> Response:
        if wants_json(request):
            return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)
        return pages.render(request, "error.html", status_code=status, headers=headers,
                            status=status, code=code, message=message)

    @app.exception_handler(errors.PortalError)
    async def portal_error(request: Request, exc: errors.PortalError) -> Response:
        status = STATUS_BY_ERROR.get(type(exc), 400)
        headers = None
        if isinstance(exc, errors.LoginThrottled):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
        elif isinstance(exc, errors.AuthenticationRequired):
            if not wants_json(request):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            headers = {"WWW-Authenticate": "Bearer"}
        return answer(request, status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [{"location": ".".join(str(part) for part in e.get("loc", ())), "problem": e.get("msg", "")}
                    for e in exc.errors()]
        summary = "; ".join(f"{p['location']}: {p['problem']}" for p in problems[:5])
        return answer(request, 422, "request.invalid", f"the request is invalid: {summary}", problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "route.not_found", 405: "route.method_not_allowed"}.get(exc.status_code, "request.invalid")
        return answer(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(request: Request, exc: PoolTimeout) -> Response:
        return answer(request, 503, "database.unavailable", DATABASE_DOWN, {"Retry-After": "2"})

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> Response:
        if is_connection_failure(exc):
            return answer(request, 503, "database.unavailable", DATABASE_DOWN, {"Retry-After": "2"})
        # Explicit validation comes first; a value the database still refuses is the client's.
        if isinstance(exc, psycopg.errors.IntegrityError | psycopg.errors.DataError):
            detail = exc.diag.message_primary or "the value is not accepted"
            return answer(request, 422, "database.rejected", f"the database refused the value: {detail}")
        log.exception("unexpected database error")
        return answer(request, 500, "internal", "internal error; the request id is in the server log")
