"""Public: the registry sidecars sync (`/registry/v1`). Read-only, no authentication: it holds
names, statuses and public keys, nothing secret. Answers carry a strong ETag over the canonical
body, and `If-None-Match` with the current tag gets 304."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from yggdrasil.mesh.adapters import registry
from yggdrasil.mesh.api.deps import State
from yggdrasil.mesh.domain.registry import canonical_json, etag_matches, registry_document, strong_etag

router = APIRouter(prefix="/registry/v1", tags=["registry"])


@router.get("/tenants/{tenant_id}/partners", summary="A tenant's partners with keys, policy and effective status")
async def partners(tenant_id: str, request: Request, state: State) -> Response:
    async with state.pool.connection() as conn:
        entries = await registry.registry_partners(conn, tenant_id)
    body = canonical_json(registry_document(tenant_id, entries))
    etag = strong_etag(body)
    # no-cache: caches may keep it but must ask us (with the ETag) before using it.
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
