"""The mesh server's error answers: its domain errors mapped to status codes here; malformed
requests, unknown routes and database failures as every server answers them
(yggdrasil.web.errors). All in the envelope {"error": {"code", "message", ...}}."""

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from yggdrasil.mesh import errors
from yggdrasil.web import errors as web_errors
from yggdrasil.web.errors import error_body

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


def _operational(exc: BaseException) -> bool:
    # Every operational error, not only a lost connection: a deadlock or a cancelled statement
    # passes too, so "503, try again" fits them as well.
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


# The database.rejected net is under the explicit validation in domain/registry.py.
DATABASE_FAILURES = web_errors.DatabaseFailures(
    unavailable="the mesh's central database is unavailable; try again",
    rejected="the database refused the values: {detail}", is_unavailable=_operational,
)


def install_error_handlers(app: FastAPI) -> None:
    web_errors.install_error_handlers(app, DATABASE_FAILURES, log)

    @app.exception_handler(errors.MeshError)
    async def mesh_error(request: Request, exc: errors.MeshError) -> JSONResponse:
        status = STATUS_BY_ERROR.get(type(exc), 400)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(error_body(exc.code, exc.message), status_code=status, headers=headers)
