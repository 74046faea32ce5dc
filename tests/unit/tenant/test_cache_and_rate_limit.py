import pytest

from yggdrasil.tenant.api.cache import ResponseCache, tags_for_tables
from yggdrasil.tenant.api.ratelimit import RateLimiter

pytestmark = pytest.mark.unit


def test_cache_evicts_least_recently_used_entries_to_stay_within_its_byte_budget():
    cache = ResponseCache(max_bytes=3 * 1200, ttl=60, max_stale=3600)
    for key in ("a", "b", "c"):
        cache.put(key, b"x" * 1000, frozenset({"items"}))
    assert cache.fresh("a") is not None  # touch a: b is now the oldest
    cache.put("d", b"x" * 1000, frozenset({"items"}))
    assert cache.fresh("b") is None
    assert {k for k in "acd" if cache.fresh(k)} == {"a", "c", "d"}
    assert cache.size_bytes <= cache.max_bytes
    assert cache.stats.evictions == 1


def test_cache_refuses_an_entry_larger_than_the_whole_budget():
    cache = ResponseCache(max_bytes=500, ttl=60, max_stale=3600)
    cache.put("big", b"x" * 1000, frozenset())
    assert cache.fresh("big") is None and cache.size_bytes == 0


def test_expired_entry_is_not_fresh_but_still_available_as_stale(monkeypatch):
    import yggdrasil.tenant.api.cache as cache_module

    now = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now[0])
    cache = ResponseCache(max_bytes=10_000, ttl=30, max_stale=600)
    cache.put("k", b"{}", frozenset({"customers"}))
    now[0] += 31
    assert cache.fresh("k") is None
    assert cache.stale("k").age() == pytest.approx(31)
    now[0] += 600
    assert cache.stale("k") is None


def test_writes_invalidate_every_entry_built_from_the_changed_table():
    cache = ResponseCache(max_bytes=100_000, ttl=60, max_stale=3600)
    cache.put("/customers", b"[]", frozenset({"customers"}))
    cache.put("/reports/open-orders", b"[]", frozenset({"reports"}))
    cache.put("/items", b"[]", frozenset({"items"}))
    removed = cache.invalidate(tags_for_tables("crm_sales_orders"))
    assert removed == 1
    assert cache.fresh("/reports/open-orders") is None
    assert cache.fresh("/customers") is not None and cache.fresh("/items") is not None


def test_token_bucket_allows_the_burst_then_refuses_with_the_wait_until_the_next_token():
    limiter = RateLimiter(rate_per_second=2, burst=3)
    assert [limiter.take("t", now=0.0) for _ in range(3)] == [0, 0, 0]
    wait = limiter.take("t", now=0.0)
    assert wait == pytest.approx(0.5)
    assert RateLimiter.retry_after_header(wait) == "1"
    assert limiter.take("t", now=0.5) == 0
    assert limiter.take("other", now=0.5) == 0, "buckets are per token"
