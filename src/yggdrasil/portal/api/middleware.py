"""ASGI middleware: request id, access log with context, metrics, and the security headers
every answer gets (pages add their Content-Security-Policy where they are rendered)."""

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from yggdrasil.logs import actor_var, request_id_var
from yggdrasil.portal.api.metrics import PortalMetrics

log = logging.getLogger("yggdrasil.portal.access")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


API_PREFIX = "/api/v1"


def route_template(scope: Scope) -> str:
    """The matched route's template (`/api/v1/orgs/{slug}`), never the raw path: metric labels
    must not grow with every slug or id. FastAPI records a route as declared on its router,
    without the prefix it was included under; the prefix is put back, or the API's
    /orgs/{slug}/tickets and the page of the same path would share a label."""
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        return "unmatched"
    if scope.get("path", "").startswith(API_PREFIX + "/") and not path.startswith(API_PREFIX):
        return API_PREFIX + path
    return path


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: PortalMetrics, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = incoming if incoming and incoming.isprintable() else uuid.uuid4().hex
        request_id_var.set(request_id)
        actor_var.set(None)
        started = time.perf_counter()
        status = 500
        response_started = False
        received = 0

        async def limited_receive() -> Message:
            # Counted as it arrives: a missing or false Content-Length does not get past it.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge()
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode()),
                                      *SECURITY_HEADERS]
            await send(message)

        declared = headers.get(b"content-length", b"")
        try:
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _BodyTooLarge()
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if not response_started:
                await self._answer(send, request_id, 413, "request.too_large",
                                   f"the request body is larger than {self.max_body_bytes} bytes")
            status = 413
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not response_started:
                await self._answer(send, request_id, 500, "internal",
                                   "internal error; the request id is in the server log")
            status = 500
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(elapsed)
            if route not in ("/health", "/metrics") or status >= 500:
                log.log(logging.WARNING if status >= 500 else logging.INFO, "%s %s %d", method, scope.get("path"),
                        status, extra={"status": status, "route": route, "ms": round(elapsed * 1000, 2)})

    @staticmethod
    async def _answer(send: Send, request_id: str, status: int, code: str, text: str) -> None:
        body = json.dumps({"error": {"code": code, "message": text}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode()),
                                *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": body})
