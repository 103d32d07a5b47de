"""Late acks on a worker's event loop, against a real Valkey: those asked for in one turn of
the loop are sent together before it polls again; one asked for outside a loop is sent at once;
a channel that closes sends its queued acks instead of putting their messages back."""

import json
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Queue
from kombu.asynchronous import Hub, set_event_loop
from kombu.message import Message

import tasks.engine.app  # noqa: F401  (kombu's QoS with the engine's acks)
from tests import services

QUEUE = "acks-test"


@pytest.fixture
def broker() -> Iterator[tuple[Connection, redis.Redis]]:
    with services.redis_server() as server, Connection(server.url) as connection, \
            redis.Redis.from_url(server.url) as client:
        yield connection, client


def received(connection: Connection, count: int) -> list[Message]:
    """`count` messages published to the test queue and taken, not acknowledged."""
    channel = connection.default_channel
    with connection.Producer() as producer:
        for n in range(count):
            producer.publish({"n": n}, routing_key=QUEUE, declare=[Queue(QUEUE)])
    messages = [channel.basic_get(QUEUE) for _ in range(count)]
    assert all(messages)
    return [m for m in messages if m is not None]


def commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}


@pytest.fixture
def hub() -> Iterator[Hub]:
    loop = Hub()
    set_event_loop(loop)
    try:
        yield loop
    finally:
        set_event_loop(None)
        loop.close()


def test_the_acks_of_one_turn_go_in_one_transaction(
        broker: tuple[Connection, redis.Redis], hub: Hub) -> None:
    # Given 20 messages taken, and unacknowledged
    connection, client = broker
    messages = received(connection, 20)
    assert client.hlen("unacked") == 20
    client.config_resetstat()
    # When a turn of the event loop acknowledges all of them (as Celery does, via call_soon)
    for message in messages:
        hub.call_soon(message.ack)
    hub.run_once()
    # Then they left the unacknowledged index in one transaction, before the loop polled again
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
    seen = commands(client)
    assert (seen.get("zrem"), seen.get("hdel"), seen.get("exec")) == (1, 1, 1), seen


def test_an_ack_outside_the_loop_is_sent_at_once(
        broker: tuple[Connection, redis.Redis]) -> None:
    # Given a message taken where no event loop runs
    connection, client = broker
    [message] = received(connection, 1)
    # When it is acknowledged
    message.ack()
    # Then it has left the unacknowledged index already
    assert client.hlen("unacked") == 0


def test_a_closing_channel_sends_its_queued_acks_instead_of_putting_them_back(
        broker: tuple[Connection, redis.Redis], hub: Hub) -> None:
    # Given two messages taken, one acknowledged in a turn that has not ended yet
    connection, client = broker
    done, held = received(connection, 2)
    done.ack()
    # When the channel closes (a worker stopping)
    connection.default_channel.close()
    # Then the acknowledged one is gone, and only the other is back on its queue
    assert client.hlen("unacked") == 0
    back = [json.loads(m)["properties"]["delivery_tag"] for m in client.lrange(QUEUE, 0, -1)]
    assert back == [held.delivery_tag]
