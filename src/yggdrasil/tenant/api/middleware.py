"""ASGI middleware: request id, access log with context, metrics, and the request size limit."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from yggdrasil.logs import actor_var, request_id_var
from yggdrasil.tenant.api.metrics import TenantMetrics
from yggdrasil.tenant.messages import message

log = logging.getLogger("yggdrasil.tenant.access")


class _BodyTooLarge(Exception):
    pass


API_PREFIX = "/api/v1"


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/api/v1/customers/{party_id}`), never the raw path:
    metric labels must not grow with every id. FastAPI records the route as declared on its
    router, without the prefix it was included under, so the prefix is put back here."""
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        return "unmatched"
    if scope.get("path", "").startswith(API_PREFIX + "/") and not path.startswith(API_PREFIX):
        return API_PREFIX + path
    return path


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: TenantMetrics, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = incoming_id if incoming_id.isprintable() and incoming_id else uuid.uuid4().hex
        request_id_var.set(request_id)
        actor_var.set(None)
        started = time.perf_counter()
        status_holder = {"status": 500}

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, request_id)
            self._record(scope, 413, started)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge()
            return msg

        response_started = False

        async def send_with_id(msg: Message) -> None:
            nonlocal response_started
            if msg["type"] == "http.response.start":
                response_started = True
                status_holder["status"] = msg["status"]
                msg.setdefault("headers", [])
                msg["headers"] = list(msg["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(msg)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if not response_started:
                await self._too_large(send, request_id)
            status_holder["status"] = 413
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not response_started:
                body = json.dumps({"error": {"code": "internal", "message": "internal error; the request id is in the server log"}}).encode()
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]})
                await send({"type": "http.response.body", "body": body})
            status_holder["status"] = 500
        finally:
            self._record(scope, status_holder["status"], started)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route_name = route_template(scope)
        method = scope.get("method", "")
        self.metrics.requests.labels(route_name, method, str(status)).inc()
        self.metrics.latency.labels(route_name, method).observe(elapsed)
        level = logging.WARNING if status >= 500 else logging.INFO
        if route_name not in ("/health", "/metrics") or status >= 500:
            log.log(level, "%s %s %d", method, scope.get("path"), status,
                    extra={"status": status, "route": route_name, "ms": round(elapsed * 1000, 2)})

    async def _too_large(self, send: Send, request_id: str) -> None:
        body = json.dumps({"error": {"code": "request.too_large",
                                     "message": message("request.too_large", limit=self.max_body_bytes)}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]})
        await send({"type": "http.response.body", "body": body})
