"""Concurrency slots in Redis: a step takes one of its limit's slots before it starts, or waits
in the limit's queue until a slot frees.

Per limit (a tenant and a pattern): a sorted set of holders (`job_id-index`, by when taken)
with a hash of their runners (host:pid), and a sorted set of waiting steps (first come, first
offered). Taking and releasing are each one Lua script, so two workers never both take the
last slot, and a step queued as a slot frees is never missed. A release hands back the waiting
steps that now fit, for the caller to re-offer through the normal hand-off; nothing polls.
"""

import json
import time
from dataclasses import dataclass

import redis

from core.store.limits import Rule
from core.store.tables import NextStep, step_task_id

PREFIX = "orch:slots:"
LIMITS = "orch:slots:limits"  # limit key → its max, for the sweeper and the metrics
THROTTLED = "orch:slots:throttled"  # job id → limit key, of steps waiting in a queue

TAKE = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return {1, redis.call('ZCARD', KEYS[1])}
end
redis.call('HSET', KEYS[4], ARGV[6], ARGV[3])
local held = redis.call('ZCARD', KEYS[1])
if held < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('HDEL', KEYS[5], ARGV[7])
  return {1, held + 1}
end
redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[5])
redis.call('HSET', KEYS[5], ARGV[7], ARGV[6])
return {0, held}
"""

RELEASE = """
if ARGV[1] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local most = tonumber(redis.call('HGET', KEYS[4], ARGV[2]) or '0')
local free = most - redis.call('ZCARD', KEYS[1])
if free <= 0 then
  return {}
end
local popped = redis.call('ZPOPMIN', KEYS[3], free)
local out = {}
for i = 1, #popped, 2 do
  table.insert(out, popped[i])
  redis.call('HDEL', KEYS[5], cjson.decode(popped[i])['job_id'])
end
return out
"""

FORGET = """
local key = redis.call('HGET', KEYS[1], ARGV[1])
if not key then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
local queue = ARGV[2] .. key .. ':queue'
local removed = 0
for _, entry in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
  if cjson.decode(entry)['job_id'] == ARGV[1] then
    removed = removed + redis.call('ZREM', queue, entry)
  end
end
return removed
"""


@dataclass(frozen=True)
class Taken:
    """The answer of `take`: whether the step holds a slot, and how many are held."""

    granted: bool
    held: int


def _keys(key: str) -> list[str]:
    base = f"{PREFIX}{key}"
    return [f"{base}:holders", f"{base}:runners", f"{base}:queue", LIMITS, THROTTLED]


def _entry(step: NextStep) -> str:
    return json.dumps({"job_id": step.job_id, "index": step.index, "intent": step.intent,
                       "pool": step.pool}, sort_keys=True)


def take(client: redis.Redis, rule: Rule, step: NextStep, runner: str) -> Taken:
    """Take a slot of `rule` for `step` (again, if it holds one: then only its runner changes),
    or queue the step to be offered when one frees."""
    member = step_task_id(step.job_id, step.index)
    granted, held = client.eval(
        TAKE, 5, *_keys(rule.key), member, runner, rule.max_running, time.time(), _entry(step),
        rule.key, step.job_id)
    return Taken(bool(granted), int(held))


def release(client: redis.Redis, key: str, job_id: str = "", index: int = 0) -> list[NextStep]:
    """Free the step's slot of limit `key` (none: only look for room) and take from the queue
    the waiting steps that now fit; the caller offers them again."""
    member = step_task_id(job_id, index) if job_id else ""
    popped = client.eval(RELEASE, 5, *_keys(key), member, key)
    return [NextStep(**json.loads(_text(entry))) for entry in popped]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def forget(client: redis.Redis, job_id: str) -> int:
    """Take a cancelled job's waiting step out of its limit's queue, so that it never takes the
    turn of a step that can run; returns how many entries were removed."""
    return int(client.eval(FORGET, 1, THROTTLED, job_id, PREFIX))


def limits(client: redis.Redis) -> dict[str, int]:
    """Every limit used so far, with its max."""
    return {_text(k): int(v) for k, v in client.hgetall(LIMITS).items()}


def holders(client: redis.Redis, key: str) -> dict[str, str]:
    """The steps (`job_id-index`) holding a slot of `key`, with their runners."""
    runners = client.hgetall(f"{PREFIX}{key}:runners")
    return {_text(k): _text(v) for k, v in runners.items()}


def in_use(client: redis.Redis, key: str) -> tuple[int, int]:
    """Slots of `key` held, and steps waiting for one."""
    base = f"{PREFIX}{key}"
    return int(client.zcard(f"{base}:holders")), int(client.zcard(f"{base}:queue"))


def throttled_jobs(client: redis.Redis) -> set[str]:
    """The jobs with a step waiting in a limit's queue (they have no message by design)."""
    return {_text(k) for k in client.hkeys(THROTTLED)}
