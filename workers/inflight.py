"""Which jobs have a message in the broker that something will still deliver or run.

A step's message is either in its pool's queue (a Redis list per priority) or taken by a worker
and not yet acknowledged (kombu's `unacked` hash; late acks keep it there while the step runs).
kombu pops a message and then records it as unacknowledged in two round trips, so a worker
killed in between loses it; the sweeper asks here to find such jobs. An unacknowledged message
counts only while a live worker holds it (`heartbeat.Holdings`): one left by a worker that
died, or on a connection lost in a broker outage (Celery drops what it held there and kombu can
neither give it back nor acknowledge it), would come back only after the visibility timeout.
The scan runs in Redis, in chunks, and only task ids cross the wire.
"""

from collections.abc import Iterable

import redis
from kombu.transport.redis import Channel

from tasks.engine.pools import POOLS

CHUNK = 1000

# ARGV: "list" or "hash", first and last index of a list chunk, then the job ids looked for.
# A step's task id is "<job id>-<index>"; returns the chunk's size and what was found: from a
# list the job ids, from the hash every task id (its holder is checked after).
SCAN = """
local items
local hash = ARGV[1] == 'hash'
if hash then
  items = redis.call('HVALS', KEYS[1])
else
  items = redis.call('LRANGE', KEYS[1], ARGV[2], ARGV[3])
end
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local found = {}
for _, item in ipairs(items) do
  local task, job = string.match(item, '"id": "(([^"]+)%-%d+)"')
  if job and wanted[job] then
    if hash then
      found[#found + 1] = task
    else
      found[#found + 1] = job
      wanted[job] = nil
    end
  end
end
return {#items, found}
"""


def queue_keys() -> list[str]:
    """The Redis lists of every pool's queue, one per priority step."""
    return [f"{pool.queue}{Channel.sep}{priority}" if priority else pool.queue
            for pool in POOLS.values() for priority in Channel.priority_steps]


def jobs_in_broker(client: redis.Redis, job_ids: Iterable[str], held: set[str]) -> set[str]:
    """The jobs among `job_ids` with a step message queued, or unacknowledged and `held` (the
    task ids live workers hold).

    Queues are scanned before the unacknowledged hash: a message taken meanwhile moves from a
    list into the hash, so it is still seen (until its worker publishes it as held, it is
    missing at one check, never at the two in a row a lost job takes).
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
        found |= {task.rsplit("-", 1)[0] for task in _decoded(hits) & held}
    return found


def _decoded(hits: list[bytes]) -> set[str]:
    return {hit.decode() for hit in hits}
