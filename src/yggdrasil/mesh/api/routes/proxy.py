"""`/proxy/{tenant_id}/{path}`: the API proxy to tenant servers.

The credential is the tenant's own API token, passed on unchanged; the mesh checks only that
it is a tenant token (`ygg_<tenant>.<secret>`) naming the tenant in the path, so tenant A's
token never reaches tenant B. Whether the secret is right is the tenant's to say (its 401
comes back through). Order of checks: credentials present and well-formed (401), tenant known
(404), token names this tenant (403), tenant active (409), then forward: refused or broken
connection 502, no answer within the timeout 504.
"""

import logging

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from yggdrasil.logs import actor_var, request_id_var
from yggdrasil.mesh.adapters.registry import get_tenant
from yggdrasil.mesh.api.deps import State, bearer_token
from yggdrasil.mesh.errors import Conflict, Forbidden, TenantTimeout, TenantUnreachable, Unauthenticated
from yggdrasil.mesh.proxy import request_headers_for_tenant, response_headers_for_caller, tenant_url
from yggdrasil.tenant.auth import token_tenant

log = logging.getLogger(__name__)

router = APIRouter(tags=["proxy"])

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@router.api_route("/proxy/{tenant_id}/{path:path}", methods=METHODS,
                  summary="Forward a request to a tenant server with the caller's tenant token")
async def proxy(tenant_id: str, path: str, request: Request, state: State) -> StreamingResponse:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthenticated("proxy.credentials_missing",
                              f"send tenant {tenant_id}'s API token: Authorization: Bearer ygg_{tenant_id}.<secret>")
    token_for = token_tenant(token)
    if token_for is None:
        raise Unauthenticated("proxy.credentials_invalid",
                              "the bearer token is not a tenant API token of the form ygg_<tenant>.<secret> "
                              "(older tokens name no tenant: create a new one with `ygg tenant token create`)")
    actor_var.set(f"token:{token_for}")
    async with state.pool.connection() as conn:
        tenant = await get_tenant(conn, tenant_id)
    metrics = state.metrics.proxied
    if token_for != tenant_id:
        metrics.labels(tenant_id, "refused").inc()
        log.warning("proxy refused a token of another tenant", extra={"tenant": tenant_id, "token_tenant": token_for})
        raise Forbidden("proxy.wrong_tenant",
                        f"this token belongs to tenant {token_for}; it is not forwarded to tenant {tenant_id}")
    if tenant["status"] != "active":
        metrics.labels(tenant_id, "refused").inc()
        raise Conflict("proxy.tenant_not_active",
                       f"tenant {tenant_id} is {tenant['status']}; the proxy forwards only to active tenants")

    api_url = tenant["api_url"]
    timeout = state.settings.mesh_proxy_timeout_seconds
    headers = request_headers_for_tenant(
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
        client_ip=request.client.host if request.client else None, request_id=request_id_var.get(),
        scheme=request.url.scheme, host=request.headers.get("host"), prefix=f"/proxy/{tenant_id}",
    )
    # Bodies are small (the tenant refuses more than max_body_bytes, and so does our
    # middleware), so the request is read whole; the answer is streamed.
    body = await request.body()
    outgoing = state.http.build_request(request.method, tenant_url(api_url, path, request.url.query),
                                        headers=headers, content=body or None, timeout=httpx.Timeout(timeout))
    try:
        answer = await state.http.send(outgoing, stream=True)
    except httpx.TimeoutException:
        metrics.labels(tenant_id, "timeout").inc()
        log.warning("tenant did not answer the proxy in time", extra={"tenant": tenant_id, "timeout_s": timeout})
        raise TenantTimeout("proxy.tenant_timeout",
                            f"tenant {tenant_id} did not answer within {timeout:g} s ({api_url})") from None
    except httpx.ConnectError as exc:
        metrics.labels(tenant_id, "unreachable").inc()
        log.warning("tenant unreachable through the proxy", extra={"tenant": tenant_id, "error": str(exc)})
        raise TenantUnreachable("proxy.tenant_unreachable",
                                f"tenant {tenant_id} cannot be reached at {api_url}: {exc or 'connection refused'}; "
                                "its server may be down") from None
    except httpx.TransportError as exc:
        metrics.labels(tenant_id, "unreachable").inc()
        log.warning("tenant broke off the proxied exchange", extra={"tenant": tenant_id, "error": repr(exc)})
        raise TenantUnreachable("proxy.tenant_unreachable",
                                f"tenant {tenant_id} at {api_url} broke off the exchange ({type(exc).__name__})",
                                ) from None
    metrics.labels(tenant_id, "forwarded").inc()
    response = StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                                 background=BackgroundTask(answer.aclose))
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1"))
                            for k, v in response_headers_for_caller(list(answer.headers.multi_items()))]
    return response
