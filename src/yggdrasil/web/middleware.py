"""ASGI middleware: request id, request size limit, access log with context, request metrics."""

import json
import logging
import time
import uuid
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from yggdrasil.logs import actor_var, request_id_var
from yggdrasil.web.errors import INTERNAL_ERROR, error_body
from yggdrasil.web.metrics import HttpMetrics

API_PREFIX = "/api/v1"
_QUIET_ROUTES = ("/health", "/metrics")  # polled all day: logged only when they fail


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/api/v1/customers/{party_id}`), never the raw path:
    metric labels must not grow with every id. FastAPI records a route as declared on its
    router, without the prefix it was included under; the prefix is put back, or an API route
    and a page of the same path would share a label."""
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        return "unmatched"
    if scope.get("path", "").startswith(API_PREFIX + "/") and not path.startswith(API_PREFIX):
        return API_PREFIX + path
    return path


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Gives every request an id (the client's X-Request-Id if it sent a usable one), sets the
    logging context, refuses a body over `max_body_bytes` with 413, turns an unhandled error
    into a JSON 500, and records the request in `metrics` and in the access log.

    `access_log` is the server's own access logger (`yggdrasil.<component>.access`).
    `too_large_message` is a template with `{limit}`. `extra_headers` go on every answer."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, max_body_bytes: int, access_log: logging.Logger,
                 too_large_message: str = "request body is larger than {limit} bytes",
                 extra_headers: Sequence[tuple[bytes, bytes]] = ()):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.log = access_log
        self.too_large_message = too_large_message.format(limit=max_body_bytes)
        self.extra_headers = list(extra_headers)

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
                                      *self.extra_headers]
            await send(message)

        declared = headers.get(b"content-length", b"")
        try:
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _BodyTooLarge()
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if not response_started:
                await self._answer(send, request_id, 413, "request.too_large", self.too_large_message)
            status = 413
        except Exception:
            self.log.exception("unhandled error", extra={"path": scope.get("path")})
            if not response_started:
                await self._answer(send, request_id, 500, "internal", INTERNAL_ERROR)
            status = 500
        finally:
            self._record(scope, status, started)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = route_template(scope)
        method = scope.get("method", "")
        self.metrics.requests.labels(route, method, str(status)).inc()
        self.metrics.latency.labels(route, method).observe(elapsed)
        if route not in _QUIET_ROUTES or status >= 500:
            self.log.log(logging.WARNING if status >= 500 else logging.INFO, "%s %s %d", method, scope.get("path"),
                         status, extra={"status": status, "route": route, "ms": round(elapsed * 1000, 2)})

    async def _answer(self, send: Send, request_id: str, status: int, code: str, text: str) -> None:
        body = json.dumps(error_body(code, text)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode()),
                                *self.extra_headers]})
        await send({"type": "http.response.body", "body": body})
