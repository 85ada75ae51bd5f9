"""kombu's Redis transport, with one Redis client per channel instead of one per message.

kombu (5.6) builds a new `redis.Redis` for every message it puts (`Channel.conn_or_acquire`),
and building one fills its tables of response callbacks: measured here, a fifth of the CPU of
a Celery publish (0.17 of 0.78 ms). A `redis.Redis` holds no connection of its own (each
command borrows one from the channel's pool), so one per channel serves every call, from any
thread, exactly as the fresh ones did. It is made again when the channel's pool is (after a
fork, or a reconnection).

Atelier's Celery apps use it for `redis://` brokers (`adapters.executors.celery`); `rediss://`
keeps kombu's own, which reads TLS defaults from that scheme's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel


NAME = f"{__name__}:Transport"
