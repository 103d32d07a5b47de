"""kombu's Redis channel keeps one client for its commands instead of building one per
command (a real broker)."""

import threading
from collections.abc import Iterator

import pytest
from celery import Celery

from core.settings import get_settings
from tasks.engine.app import create_celery


@pytest.fixture
def app(broker_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    monkeypatch.setenv("REDIS_URL", broker_url.rsplit("/", 1)[0] + "/5")
    get_settings.cache_clear()
    yield create_celery()
    get_settings.cache_clear()


def test_a_channel_sends_every_command_through_one_client(app: Celery) -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        # Given the clients a channel's commands go through, asked for from several threads at
        # once (the channel's first commands), then once more
        seen = []
        together = threading.Barrier(8)

        def ask(wait: bool = True) -> None:
            if wait:
                together.wait(timeout=10)
            with channel.conn_or_acquire() as client:
                assert client.ping()
                seen.append(client)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ask(wait=False)
        # Then they are one client (not one built per command), on the channel's own pool
        assert len({id(client) for client in seen}) == 1
        assert seen[0].connection_pool is channel.pool
        # And the event loop's client is still its own, on the loop's pool
        assert channel.client is not seen[0]
