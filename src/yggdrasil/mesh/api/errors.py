"""One place that turns errors into HTTP answers: {"error": {"code", "message", ...}}."""

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from yggdrasil.mesh import errors

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.MeshError], int] = {
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.InvalidInput: 422,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.TenantUnreachable: 502,
    errors.TenantTimeout: 504,
}


def error_body(code: str, text: str, **extra: object) -> dict:
    return {"error": {"code": code, "message": text, **extra}}


def _database_unavailable() -> JSONResponse:
    return JSONResponse(error_body("database.unavailable", "the mesh's central database is unavailable; try again"),
                        status_code=503, headers={"Retry-After": "1"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.MeshError)
    async def mesh_error(request: Request, exc: errors.MeshError) -> JSONResponse:
        status = STATUS_BY_ERROR.get(type(exc), 400)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(error_body(exc.code, exc.message), status_code=status, headers=headers)

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

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        return _database_unavailable()

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return _database_unavailable()
        detail = exc.diag.message_primary if getattr(exc, "diag", None) else str(exc)
        if isinstance(exc, (pg_errors.IntegrityError, pg_errors.DataError)):
            # The safety net under the explicit validation in domain/registry.py.
            return JSONResponse(error_body("database.rejected", f"the database refused the values: {detail}"),
                                status_code=422)
        log.exception("unexpected database error")
        return JSONResponse(error_body("internal", "internal error; the request id is in the server log"),
                            status_code=500)
