"""Requests per second per API key and per tenant: two token buckets in Redis, shared by every
API process, kept in one hash per tenant and taken together by one Lua script (sent once, then
called by its SHA)."""

import logging
import math
import time
from dataclasses import dataclass

import redis
from redis.exceptions import RedisError

from core.store.rates import Rate, Rates

log = logging.getLogger(__name__)

# KEYS: the tenant's hash of buckets: field `tenant` is the tenant's, `key:<id>` each key's (a
# string "tokens at"), `until` when the hash expires. ARGV: the key's field, then rate and burst
# of the key's bucket and of the tenant's (rate 0: no bucket). Buckets refill by the server's
# clock; a request takes a token from each, or from neither when either is empty. The hash
# lives until every bucket in it is full again (a missing bucket is a full one); its expiry is
# pushed a window further only when a bucket would outlive it, so most requests set none.
# Returns: allowed, then per bucket its whole tokens left, seconds until it holds one token,
# seconds until it is full (as strings: Lua numbers come back as integers). Four commands (the
# script, TIME, one HMGET, one HSET), and a PEXPIREAT about once a window.
BUCKETS = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local fields = {ARGV[1], 'tenant'}
local held = redis.call('HMGET', KEYS[1], fields[1], fields[2], 'until')
local levels, allowed, window = {}, 1, 0
for i = 1, 2 do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if rate > 0 then
    local tokens, at = burst, now
    if held[i] then
      local space = string.find(held[i], ' ', 1, true)
      tokens = tonumber(string.sub(held[i], 1, space - 1))
      at = tonumber(string.sub(held[i], space + 1))
    end
    levels[i] = math.min(burst, tokens + math.max(0, now - at) * rate)
    if levels[i] < 1 then allowed = 0 end
    window = math.max(window, burst / rate)
  end
end
local out, written, full = {allowed}, {}, now
for i = 1, 2 do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if levels[i] == nil then
    table.insert(out, -1); table.insert(out, '0'); table.insert(out, '0')
  else
    local tokens = levels[i] - allowed
    table.insert(written, fields[i])
    table.insert(written, tostring(tokens) .. ' ' .. tostring(now))
    full = math.max(full, now + (burst - tokens) / rate)
    table.insert(out, math.floor(tokens))
    table.insert(out, tostring(math.max(0, 1 - tokens) / rate))
    table.insert(out, tostring((burst - tokens) / rate))
  end
end
local expires = full + 1 > (tonumber(held[3]) or 0)
if expires then
  table.insert(written, 'until'); table.insert(written, tostring(full + 1 + window))
end
redis.call('HSET', KEYS[1], unpack(written))
if expires then redis.call('PEXPIREAT', KEYS[1], math.ceil((full + 1 + window) * 1000)) end
return out
"""
BUCKETS_KEY = "orch:buckets:{tenant_id}"
"""One key per tenant: a script touches one slot, as Redis Cluster requires."""
WARN_EVERY = 60.0  # seconds between warnings that the limiter is failing open


@dataclass(frozen=True)
class Bucket:
    """One bucket's answer: what it allows and what is left of it."""

    name: str
    rate: Rate
    remaining: int
    wait: float  # seconds until it holds a token again
    full: float  # seconds until it is full again


@dataclass(frozen=True)
class Verdict:
    """Whether a request may go on, and the IETF draft headers that say how much is left."""

    allowed: bool
    buckets: tuple[Bucket, ...]

    @property
    def retry_after(self) -> int:
        """Whole seconds until every empty bucket holds a token again (at least 1)."""
        return max([1, *(math.ceil(b.wait) for b in self.buckets if b.remaining < 1)])

    def headers(self) -> dict[str, str]:
        """`RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10), and
        `Retry-After` on a refusal."""
        policy = ", ".join(f'"{b.name}";q={b.rate.burst};w={_window(b.rate)}'
                           for b in self.buckets)
        left = ", ".join(f'"{b.name}";r={max(0, b.remaining)};t={math.ceil(b.full)}'
                         for b in self.buckets)
        found = {"RateLimit-Policy": policy, "RateLimit": left}
        if not self.allowed:
            found["Retry-After"] = str(self.retry_after)
        return found


def _window(rate: Rate) -> int:
    """The draft's window: the seconds in which the rate refills the whole burst."""
    return max(1, math.ceil(rate.burst / rate.rate))


class RateLimiter:
    """Takes a request's tokens from its key's and its tenant's buckets; fails open (with a
    warning) when Redis cannot answer, so a broker outage does not refuse every request."""

    def __init__(self, client: redis.Redis) -> None:
        self.script = client.register_script(BUCKETS)
        self._warned = -WARN_EVERY

    def take(self, key_id: str, tenant_id: str, rates: Rates) -> Verdict | None:
        """The verdict on one request, or None when nothing limits it."""
        if rates.key.rate <= 0 and rates.tenant.rate <= 0:
            return None
        try:
            answer = self.script(
                keys=[BUCKETS_KEY.format(tenant_id=tenant_id)],
                args=[f"key:{key_id}", rates.key.rate, rates.key.burst, rates.tenant.rate,
                      rates.tenant.burst])
        except RedisError as exc:
            self._warn(exc)
            return None
        return _verdict(answer, rates)

    def _warn(self, exc: RedisError) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning("rate limits not enforced: Redis unavailable (%s); requests pass",
                        type(exc).__name__)


def _verdict(answer: list[object], rates: Rates) -> Verdict:
    named = (("key", rates.key), ("tenant", rates.tenant))
    return Verdict(bool(answer[0]), tuple(
        Bucket(name, rate, int(_text(answer[1 + 3 * n])), float(_text(answer[2 + 3 * n])),
               float(_text(answer[3 + 3 * n])))
        for n, (name, rate) in enumerate(named) if rate.rate > 0))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
