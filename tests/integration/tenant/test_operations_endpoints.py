import pytest

from conftest import make_settings, open_api

pytestmark = pytest.mark.integration


async def test_health_reports_database_up_without_a_token(api):
    health = await api.http.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["database"]["state"] == "up" and body["tenant_id"] == "acme"


async def test_metrics_count_requests_by_route_and_status_and_cache_results(api):
    await api.post("/api/v1/customers", json={"code": "M1", "name": "Metric Customer"})
    for _ in range(2):
        await api.get("/api/v1/customers")
    await api.http.get("/api/v1/customers")  # 401
    text = (await api.http.get("/metrics")).text

    assert 'ygg_http_requests_total{method="GET",route="/api/v1/customers",status="200"} 2.0' in text
    assert 'ygg_http_requests_total{method="GET",route="/api/v1/customers",status="401"} 1.0' in text
    assert 'ygg_cache_requests_total{result="hit"} 1.0' in text
    assert 'ygg_cache_requests_total{result="miss"} 1.0' in text
    assert "ygg_http_request_duration_seconds_bucket" in text
    assert "ygg_db_pool_size" in text and "ygg_database_up 1.0" in text


async def test_rate_limited_token_gets_429_with_retry_after_and_others_are_unaffected(tenant_dsn):
    async with open_api(make_settings(tenant_dsn, rate_limit_per_second=1, rate_limit_burst=3)) as api:
        statuses = [(await api.get("/api/v1/customers", role="sales")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await api.get("/api/v1/customers", role="sales")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "retry" in limited.json()["error"]["message"]
        assert (await api.get("/api/v1/customers", role="auditor")).status_code == 200


async def test_oversized_and_malformed_bodies_get_4xx_with_a_message(api):
    big = await api.post("/api/v1/customers", content=b'{"code": "' + b"x" * (2 * 1024 * 1024) + b'"}',
                         headers={"content-type": "application/json"})
    assert big.status_code == 413 and "larger than" in big.json()["error"]["message"]
    broken = await api.post("/api/v1/customers", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "request.invalid"
    wrong_types = await api.post("/api/v1/customers", json={"code": 5, "name": ["a"], "active": "maybe"})
    assert wrong_types.status_code == 422


async def test_every_response_carries_a_request_id_and_echoes_a_given_one(api):
    response = await api.get("/api/v1/customers", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    assert len((await api.get("/api/v1/customers")).headers["x-request-id"]) == 32


