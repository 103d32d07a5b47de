"""The step messages a worker holds, published in a real Valkey: the receiving thread only
queues each one; a sender publishes what is queued in one command; a step waits until its
message is published before it runs."""

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasks.engine.heartbeat import HELD, Holdings
from tests import services

RUNNER = "host:1/abc"
SLOW = 0.3


class SlowBroker:
    """The real client, each write to it taking `SLOW` seconds longer (a loaded broker); counts
    the commands that add held messages."""

    def __init__(self, client: redis.Redis) -> None:
        self.client, self.adds = client, 0

    def sadd(self, *args: Any) -> Any:
        self.adds += 1
        time.sleep(SLOW)
        return self.client.sadd(*args)

    def pipeline(self, transaction: bool = True) -> Any:
        broker = self

        class Pipe:
            def __init__(self) -> None:
                self.pipe = broker.client.pipeline(transaction=transaction)

            def sadd(self, *args: Any) -> None:
                broker.adds += 1
                self.pipe.sadd(*args)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.pipe, name)

            def execute(self) -> Any:
                time.sleep(SLOW)
                return self.pipe.execute()
        return Pipe()

    def delete(self, *keys: str) -> Any:
        return self.client.delete(*keys)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    with services.redis_server() as server, redis.Redis.from_url(server.url) as connection:
        yield connection


def published(client: redis.Redis) -> set[str]:
    return {m.decode() for m in client.smembers(HELD.format(runner=RUNNER))}


def test_receiving_does_not_wait_for_the_broker_and_a_step_waits_for_its_record(
        client: redis.Redis) -> None:
    # Given a worker's holdings on a broker slow to write
    broker = SlowBroker(client)
    holdings = Holdings(broker, RUNNER, keep=60)  # type: ignore[arg-type]
    try:
        # When a message is received
        began = time.monotonic()
        holdings.received("job_a-0")
        # Then the receiving thread goes on at once, before it is published
        assert time.monotonic() - began < SLOW / 3
        assert published(client) == set()
        # And its step, waiting for the record before it runs, finds it published
        holdings.wait_published("job_a-0")
        assert published(client) == {"job_a-0"}
        assert client.ttl(HELD.format(runner=RUNNER)) > 0  # it expires with the runner
    finally:
        holdings.clear()


def test_messages_received_while_one_is_published_go_in_one_command(
        client: redis.Redis) -> None:
    # Given a worker's holdings publishing a first message on a slow broker
    broker = SlowBroker(client)
    holdings = Holdings(broker, RUNNER, keep=60)  # type: ignore[arg-type]
    try:
        holdings.received("job_b-0")
        time.sleep(SLOW / 3)
        # When 50 more arrive meanwhile, from several threads
        threads = [threading.Thread(target=holdings.received, args=(f"job_c{n}-0",))
                   for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        holdings.wait_published("job_c49-0")
        holdings.wait_published("job_c0-0")
        # Then all are published, in two commands in all
        assert published(client) == {"job_b-0", *(f"job_c{n}-0" for n in range(50))}
        assert broker.adds == 2
    finally:
        holdings.clear()
