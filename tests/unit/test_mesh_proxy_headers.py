"""Which headers the mesh's proxy passes on, and where a request goes (no I/O)."""

import pytest

from yggdrasil.mesh.proxy import request_headers_for_tenant, response_headers_for_caller, tenant_url

pytestmark = pytest.mark.unit


def test_hop_by_hop_headers_stay_behind_and_the_caller_is_named() -> None:
    incoming = [("host", "mesh.example"), ("authorization", "Bearer ygg_acme.secret"), ("connection", "keep-alive, x-trace"),
                ("keep-alive", "timeout=5"), ("x-trace", "hop"), ("transfer-encoding", "chunked"),
                ("x-forwarded-for", "198.51.100.1"), ("content-type", "application/json"), ("content-length", "12")]
    sent = request_headers_for_tenant(incoming, client_ip="203.0.113.7", request_id="req-1", scheme="https",
                                      host="mesh.example", prefix="/proxy/acme")
    names = [k for k, _ in sent]
    assert dict(sent) == {
        "authorization": "Bearer ygg_acme.secret", "content-type": "application/json",
        "x-forwarded-for": "198.51.100.1, 203.0.113.7", "x-forwarded-proto": "https",
        "x-forwarded-host": "mesh.example", "x-forwarded-prefix": "/proxy/acme", "accept-encoding": "identity",
        "x-request-id": "req-1",
    }
    assert len(names) == len(set(names))


def test_the_tenants_answer_keeps_its_own_headers_but_not_the_connections() -> None:
    answer = [("content-type", "application/json"), ("set-cookie", "a=1"), ("set-cookie", "b=2"),
              ("connection", "close"), ("transfer-encoding", "chunked"), ("date", "x"), ("server", "uvicorn"),
              ("x-request-id", "theirs"), ("etag", '"v1"')]
    assert response_headers_for_caller(answer) == [("content-type", "application/json"), ("set-cookie", "a=1"),
                                                   ("set-cookie", "b=2"), ("etag", '"v1"')]


def test_the_path_and_query_are_appended_to_the_tenants_url() -> None:
    assert tenant_url("http://127.0.0.1:8001/", "api/v1/customers", "limit=1&after=5") == \
        "http://127.0.0.1:8001/api/v1/customers?limit=1&after=5"
    assert tenant_url("https://erp.acme.example/base", "health", "") == "https://erp.acme.example/base/health"
