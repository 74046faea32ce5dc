"""The API proxy against real tenant servers: the tenant's own token is the credential, tenant
A's token never reaches tenant B, and a tenant that is down, hung or unknown gets a clear
answer."""

from __future__ import annotations

import asyncio

import time

import httpx
import psycopg
import pytest
from conftest import database_from_template
from mesh_harness import mesh_server, register, running, silent_server, tenant_server, tenant_token

from yggdrasil.devstack.ports import free_port
from yggdrasil.mesh.adapters.registry import set_tenant_status

pytestmark = pytest.mark.integration

PROXY_TIMEOUT = 1.5


@pytest.fixture
def globex_dsn(pg_admin_dsn: str, tenant_template: str):
    with database_from_template(pg_admin_dsn, tenant_template, prefix="ygg_test_globex") as dsn:
        yield dsn


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_proxy_forwards_a_tenants_own_token_and_refuses_everything_else(
        central_dsn: str, tenant_dsn: str, globex_dsn: str, tmp_path) -> None:
    acme = tenant_server(tenant_dsn, "acme", free_port(), tmp_path)
    globex = tenant_server(globex_dsn, "globex", free_port(), tmp_path)
    acme_token, globex_token = tenant_token(tenant_dsn, "acme"), tenant_token(globex_dsn, "globex")
    await register(central_dsn, "acme", acme.url)
    await register(central_dsn, "globex", globex.url)
    await register(central_dsn, "gone", f"http://127.0.0.1:{free_port()}")
    await register(central_dsn, "paused", acme.url)
    async with await psycopg.AsyncConnection.connect(central_dsn) as conn:
        await set_tenant_status(conn, "paused", "suspended")
    mesh = mesh_server(central_dsn, free_port(), tmp_path, YGG_MESH_HEALTH_ENABLED="false",
                       YGG_MESH_PROXY_TIMEOUT_SECONDS=str(PROXY_TIMEOUT))

    with running(acme, globex, mesh), silent_server() as hung_port:
        await register(central_dsn, "hung", f"http://127.0.0.1:{hung_port}")
        async with httpx.AsyncClient(base_url=mesh.url, timeout=10) as http:
            # A correct token: the tenant's real answer, body, query and method included.
            created = await http.post("/proxy/acme/api/v1/customers", headers=_auth(acme_token),
                                      json={"code": "C-PROXY", "name": "Proxied <Customer> & 'Sons'"})
            assert created.status_code == 201, created.text
            through = await http.get("/proxy/acme/api/v1/customers", params={"limit": 1}, headers=_auth(acme_token))
            direct = httpx.get(f"{acme.url}/api/v1/customers", params={"limit": 1}, headers=_auth(acme_token))
            assert through.status_code == 200
            assert through.json() == direct.json()
            assert [c["name"] for c in through.json()["items"]] == ["Proxied <Customer> & 'Sons'"]
            assert through.headers["content-type"] == direct.headers["content-type"]
            assert (await http.get("/proxy/globex/api/v1/customers", headers=_auth(globex_token))).json()["items"] == []

            # Missing or malformed credentials: 401 from the mesh.
            missing = await http.get("/proxy/acme/api/v1/customers")
            assert missing.status_code == 401 and missing.json()["error"]["code"] == "proxy.credentials_missing"
            for token in ("not-a-token", "ygg_" + "x" * 43, "yggadm_" + "x" * 43):
                refused = await http.get("/proxy/acme/api/v1/customers", headers=_auth(token))
                assert refused.status_code == 401 and refused.json()["error"]["code"] == "proxy.credentials_invalid"
            # A well-formed token with a wrong secret is the tenant's to refuse.
            wrong = await http.get("/proxy/acme/api/v1/customers", headers=_auth("ygg_acme." + "x" * 43))
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "auth.invalid_token"

            # Tenant A's token on tenant B: 403, and B never sees the request.
            crossed = await http.get("/proxy/globex/api/v1/customers/424242", headers=_auth(acme_token))
            assert crossed.status_code == 403
            assert crossed.json()["error"] == {
                "code": "proxy.wrong_tenant",
                "message": "this token belongs to tenant acme; it is not forwarded to tenant globex"}
            assert (await http.get("/proxy/globex/api/v1/customers/424243", headers=_auth(globex_token))).status_code == 404
            # The tenant writes its log after answering: wait for the later request's line, then
            # the refused one, sent before it, would be there too had it been forwarded.
            globex_log = await _eventually_logged(globex.log_path, "/api/v1/customers/424243")
            assert "/api/v1/customers/424242" not in globex_log

            unknown = await http.get("/proxy/nobody/api/v1/customers", headers=_auth(acme_token))
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "tenant.not_found"
            paused = await http.get("/proxy/paused/api/v1/customers", headers=_auth("ygg_paused." + "x" * 43))
            assert paused.status_code == 409 and paused.json()["error"]["message"] == \
                "tenant paused is suspended; the proxy forwards only to active tenants"

            # Nothing listening: 502 at once, naming the tenant.
            started = time.monotonic()
            gone = await http.get("/proxy/gone/api/v1/customers", headers=_auth("ygg_gone." + "x" * 43))
            assert gone.status_code == 502 and time.monotonic() - started < PROXY_TIMEOUT
            assert gone.json()["error"]["message"].startswith("tenant gone cannot be reached at http://127.0.0.1:")

            # Accepts and never answers: 504 after the timeout.
            started = time.monotonic()
            hung = await http.get("/proxy/hung/api/v1/customers", headers=_auth("ygg_hung." + "x" * 43))
            waited = time.monotonic() - started
            assert hung.status_code == 504
            assert hung.json()["error"] == {"code": "proxy.tenant_timeout",
                                            "message": f"tenant hung did not answer within {PROXY_TIMEOUT:g} s "
                                                       f"(http://127.0.0.1:{hung_port})"}
            assert PROXY_TIMEOUT <= waited < PROXY_TIMEOUT + 5

            metrics = (await http.get("/metrics")).text
            for outcome in ("forwarded", "refused", "unreachable", "timeout"):
                assert f'outcome="{outcome}"' in metrics


async def _eventually_logged(path, text: str, timeout: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in (content := path.read_text()):
        assert asyncio.get_running_loop().time() < deadline, f"{text!r} never appeared in {path}"
        await asyncio.sleep(0.05)
    return content
