"""Which jobs have a message in the broker.

A step's message is either in its pool's queue (a Redis list per priority) or taken by a worker
and not yet acknowledged (kombu's `unacked` hash; late acks keep it there while the step runs).
kombu pops a message and then records it as unacknowledged in two round trips, so a worker
killed in between loses it; the sweeper asks here to find such jobs. The scan runs in Redis, in
chunks, and only task ids cross the wire.
"""

from collections.abc import Iterable

import redis
from kombu.transport.redis import Channel

from tasks.engine.pools import POOLS

CHUNK = 1000

# ARGV: "list" or "hash", first and last index of a list chunk, then the job ids looked for.
# A step's task id is "<job id>-<index>"; returns the chunk's size and the job ids found.
SCAN = """
local items
if ARGV[1] == 'hash' then
  items = redis.call('HVALS', KEYS[1])
else
  items = redis.call('LRANGE', KEYS[1], ARGV[2], ARGV[3])
end
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local found = {}
for _, item in ipairs(items) do
  local job = string.match(item, '"id": "([^"]+)%-%d+"')
  if job and wanted[job] then
    found[#found + 1] = job
    wanted[job] = nil
  end
end
return {#items, found}
"""


def queue_keys() -> list[str]:
    """The Redis lists of every pool's queue, one per priority step."""
    return [f"{pool.queue}{Channel.sep}{priority}" if priority else pool.queue
            for pool in POOLS.values() for priority in Channel.priority_steps]


def jobs_in_broker(client: redis.Redis, job_ids: Iterable[str]) -> set[str]:
    """The jobs among `job_ids` with a step message queued or unacknowledged.

    Queues are scanned before the unacknowledged hash: a message taken meanwhile moves from a
    list into the hash, so it is still seen.
    """
    script = client.register_script(SCAN)
    wanted, found = set(job_ids), set[str]()
    for key in queue_keys():
        start = 0
        while wanted:
            size, hits = script(keys=[key], args=["list", start, start + CHUNK - 1, *wanted])
            found |= _decoded(hits)
            wanted -= found
            if size < CHUNK:
                break
            start += CHUNK
    if wanted:
        _, hits = script(keys=[Channel.unacked_key], args=["hash", 0, 0, *wanted])
        found |= _decoded(hits)
    return found


def _decoded(hits: list[bytes]) -> set[str]:
    return {hit.decode() for hit in hits}
