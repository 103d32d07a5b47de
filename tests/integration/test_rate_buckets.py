"""The rate limiter's two token buckets in a real Valkey: a key's, and its tenant's shared by
all its keys, in one hash per tenant that outlives every bucket's refill; a refusal takes from
neither; four broker commands a request."""

import time
from collections.abc import Iterator

import pytest
import redis

from api.ratelimit import BUCKETS_KEY, RateLimiter
from core.store.rates import Rate, Rates
from tests import services


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """A private Valkey, so its command counts are this test's alone."""
    with services.redis_server() as server, redis.Redis.from_url(server.url) as connection:
        yield connection


def allowed(limiter: RateLimiter, key: str, rates: Rates, times: int) -> list[bool]:
    verdicts = [limiter.take(key, "ten_a", rates) for _ in range(times)]
    return [verdict is not None and verdict.allowed for verdict in verdicts]


def test_a_tenants_bucket_is_shared_by_its_keys_and_a_refusal_takes_nothing(
        client: redis.Redis) -> None:
    # Given keys with a roomy bucket each, and their tenant's bucket of 5 that refills slowly
    limiter = RateLimiter(client)
    rates = Rates(key=Rate(rate=0.01, burst=100), tenant=Rate(rate=0.5, burst=5))
    # When two keys of the tenant send 4 requests each
    first, second = allowed(limiter, "key_a", rates, 4), allowed(limiter, "key_b", rates, 4)
    # Then 5 pass in all, and the refused ones name the tenant's bucket as empty
    assert first + second == [True] * 5 + [False] * 3
    refused = limiter.take("key_b", "ten_a", rates)
    assert refused is not None and not refused.allowed
    assert {b.name: b.remaining for b in refused.buckets} == {"key": 99, "tenant": 0}
    assert refused.retry_after == 2  # one token at 0.5 a second


def test_a_keys_bucket_refuses_alone_and_refills_by_the_clock(client: redis.Redis) -> None:
    # Given a key's bucket of 3 refilling 10 a second, under a roomy tenant bucket
    limiter = RateLimiter(client)
    rates = Rates(key=Rate(rate=10, burst=3), tenant=Rate(rate=0.01, burst=100))
    # When it is emptied, refused, then asked again after a token's time
    assert allowed(limiter, "key_c", rates, 4) == [True, True, True, False]
    time.sleep(0.15)
    verdict = limiter.take("key_c", "ten_a", rates)
    # Then one more passes, and the tenant lost only the tokens of the requests that passed
    assert verdict is not None and verdict.allowed
    assert {b.name: b.remaining for b in verdict.buckets} == {"key": 0, "tenant": 96}


def test_a_request_costs_four_broker_commands(client: redis.Redis) -> None:
    # Given a limiter whose script is loaded, with buckets that take 100 s to fill (so the
    # hash's expiry, set by the first request, is not pushed again during the test)
    limiter = RateLimiter(client)
    rates = Rates(key=Rate(rate=1000, burst=100_000), tenant=Rate(rate=1000, burst=100_000))
    limiter.take("key_d", "ten_a", rates)
    client.config_resetstat()
    # When 100 requests are checked
    for _ in range(100):
        limiter.take("key_d", "ten_a", rates)
    # Then the broker ran four commands each (the script, TIME, one HMGET, one HSET)
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()
             if name not in ("cmdstat_info", "cmdstat_config|resetstat")}
    assert sum(calls.values()) == 400, calls


def test_the_buckets_outlive_their_refill_and_then_go(client: redis.Redis) -> None:
    # Given a key's bucket of 4 that refills 2 a second (full 2 s after it was emptied), and
    # a tenant's that refills much faster
    limiter = RateLimiter(client)
    rates = Rates(key=Rate(rate=2, burst=4), tenant=Rate(rate=100, burst=100))
    key = BUCKETS_KEY.format(tenant_id="ten_a")
    # When the key's bucket is emptied, and asked again 1.2 s later (it has 2 tokens again)
    assert allowed(limiter, "key_e", rates, 5) == [True] * 4 + [False]
    expiry = client.pttl(key)
    time.sleep(1.2)
    again = limiter.take("key_e", "ten_a", rates)
    # Then until it was full again, the hash was kept: the bucket was not forgotten (a
    # forgotten one would be full: 4 tokens, 3 after this request)
    assert again is not None and again.allowed
    assert {b.name: b.remaining for b in again.buckets}["key"] == 1
    assert expiry >= 2000
    # And once every bucket in it is full, the hash goes by itself (within a window more)
    deadline = time.monotonic() + 2 + 1 + 2 + 1
    while client.exists(key):
        assert time.monotonic() < deadline, client.pttl(key)
        time.sleep(0.1)
