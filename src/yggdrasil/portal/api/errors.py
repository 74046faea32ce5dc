"""One place that turns errors into answers: `{"error": {"code", "message"}}` for the API and
operations endpoints, an error page (or a redirect to sign in) for the web pages. The portal's
domain errors are mapped to status codes here; malformed requests, unknown routes and database
failures are answered as every server answers them (yggdrasil.web.errors)."""

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from yggdrasil.portal import errors
from yggdrasil.portal.api.pages import Pages
from yggdrasil.web import errors as web_errors
from yggdrasil.web.errors import json_answer

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
DATABASE_FAILURES = web_errors.DatabaseFailures(
    unavailable="the portal's database is unreachable; try again in a moment",
    # Explicit validation comes first; a value the database still refuses is the client's.
    rejected="the database refused the value: {detail}", retry_after_seconds=2,
)


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(_JSON_PREFIXES)


def install_error_handlers(app: FastAPI, pages: Pages) -> None:
    def answer(request: Request, status: int, code: str, message: str,
               headers: dict[str, str] | None = None, **extra: object) -> Response:
        if wants_json(request):
            return json_answer(request, status, code, message, headers, **extra)
        return pages.render(request, "error.html", status_code=status, headers=headers,
                            status=status, code=code, message=message)

    web_errors.install_error_handlers(app, DATABASE_FAILURES, log, answer)

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
