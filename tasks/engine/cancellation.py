"""Cooperative cancellation: the API raises a flag a running step can check cheaply."""

import redis

KEY = "orch:cancelled:{job_id}"
TTL_SECONDS = 24 * 3600


def flag(client: redis.Redis, job_id: str) -> None:
    client.set(KEY.format(job_id=job_id), b"1", ex=TTL_SECONDS)


def is_cancelled(client: redis.Redis, job_id: str) -> bool:
    return bool(client.exists(KEY.format(job_id=job_id)))


def clear(client: redis.Redis, job_id: str) -> None:
    """Lower the flag: a retried job runs again."""
    client.delete(KEY.format(job_id=job_id))


UNREVOKE = "orch_unrevoke"
"""The workers' remote-control command that forgets the revokes of a retried job's steps."""
