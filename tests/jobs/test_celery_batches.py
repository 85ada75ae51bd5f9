"""Celery messages carry batches of jobs: how they are published (from a thread of the
publisher's own, on a real Redis) and how a worker process runs one (in turn, handing the rest
back behind a slow job)."""

import asyncio
import base64
import json
import os
import time
import uuid

import pytest
import redis
from kombu import Connection

from atelier.adapters.executors import celery as celery_executor
from atelier.adapters.executors.celery import (
    BATCH,
    HAND_BACK_AFTER,
    CeleryExecutor,
    _WorkerState,
)
from atelier.jobs.executor import Delivery
from atelier.settings import Settings
from tests.conftest import free_port
from tests.jobs.test_celery_live import RedisServer

pytestmark = pytest.mark.backend_independent


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def executor_on(url: str) -> CeleryExecutor:
    settings = Settings(
        _env_file=None, jobs={"executor": "celery", "broker_url": url, "publish_timeout_seconds": 1}
    )
    return CeleryExecutor(settings, app=None)


def messages(url: str, queue: str) -> list[list]:
    """The job lists of the `atelier.run_jobs` messages waiting in `queue`, oldest first."""
    raw = redis.Redis.from_url(url).lrange(queue, 0, -1)
    bodies = []
    for item in reversed(raw):  # kombu pushes on the left
        envelope = json.loads(item)
        assert envelope["headers"]["task"] == "atelier.run_jobs"
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        assert args[0] == queue
        bodies.append([job_id for job_id, _ in args[1]])
    return bodies


def jobs(queue: str, *ids: str) -> list[Delivery]:
    return [Delivery(job_id, queue, 60) for job_id in ids]


async def test_posted_jobs_leave_in_batches_per_queue(broker):
    redis.Redis.from_url(broker.url).flushdb()
    executor = executor_on(broker.url)
    failures = []

    async def failed(deliveries, exc):
        failures.append(deliveries)

    ids = [f"job_{n}" for n in range(BATCH * 2 + 1)]
    executor.post(jobs("default", *ids) + jobs("ml", "job_ml"), failed)
    await executor.flush()
    assert messages(broker.url, "default") == [ids[:BATCH], ids[BATCH : BATCH * 2], ids[-1:]]
    assert messages(broker.url, "ml") == [["job_ml"]]
    assert failures == []
    await executor.close()


async def test_what_cannot_be_posted_is_reported_back_on_the_posting_loop():
    executor = executor_on(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    reported = []

    async def failed(deliveries, exc):
        reported.append(([d.job_id for d in deliveries], asyncio.get_running_loop()))

    begin = time.monotonic()
    executor.post(jobs("default", "job_a", "job_b"), failed)
    assert time.monotonic() - begin < 0.1  # the poster does not wait for the broker
    await executor.flush()
    for _ in range(100):
        if reported:
            break
        await asyncio.sleep(0.01)
    assert reported == [(["job_a", "job_b"], asyncio.get_running_loop())]
    await executor.close()


async def test_a_redis_publisher_builds_one_client_and_no_declaration_per_message(
    broker, monkeypatch
):
    """kombu would build a `redis.Redis` per message, and Celery declare the queue and stream
    the arguments' repr: together about 40 % of a publish's CPU."""
    redis.Redis.from_url(broker.url).flushdb()
    executor = executor_on(broker.url)
    executor._send(jobs("default", "job_warm"))  # the channel and its pool are made here
    built = []
    real_init = redis.Redis.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counting_init)
    for n in range(5):
        executor._send(jobs("default", f"job_{n}"))
    monkeypatch.undo()
    assert built == []
    assert messages(broker.url, "default") == [["job_warm"]] + [[f"job_{n}"] for n in range(5)]
    newest = json.loads(redis.Redis.from_url(broker.url).lindex("default", 0))
    assert newest["headers"]["argsrepr"] == "['default', [['job_4', 60]]]"
    # Nothing was declared: no kombu binding for the queue was written.
    assert redis.Redis.from_url(broker.url).keys("_kombu.binding.*") == []
    await executor.close()


def test_a_channel_makes_its_client_again_with_its_pool(broker):
    """After a fork or a reconnection kombu drops the channel's pool: the shared client must
    not keep the old one."""
    executor = executor_on(broker.url)
    with executor.app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as again:
            assert first is again
        channel._disconnect_pools()
        with channel.conn_or_acquire() as fresh:
            assert fresh is not first
            assert fresh.connection_pool is channel.pool
            assert fresh.ping()
    executor.close_sync()


def test_rediss_keeps_kombus_own_transport():
    """Its TLS defaults come from the scheme's name, which a transport of ours would hide."""
    assert executor_on("redis://127.0.0.1:6379/0").app.conf.broker_transport is not None
    assert executor_on("rediss://127.0.0.1:6379/0").app.conf.broker_transport is None


def test_an_amqp_publisher_still_declares_the_queue():
    """RabbitMQ drops a message sent to a queue that does not exist yet; on Redis the queue is
    a list made by the push itself."""
    url = os.environ.get("ATELIER_TEST_AMQP_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must publish to RabbitMQ: set ATELIER_TEST_AMQP_URL")
        pytest.skip("ATELIER_TEST_AMQP_URL is not set")
    queue = f"atelier-test-{uuid.uuid4().hex[:8]}"
    executor = executor_on(url)
    try:
        executor._send(jobs(queue, "job_a"))
        with Connection(url) as connection:
            channel = connection.channel()
            _, waiting, _ = channel.queue_declare(queue, passive=True)
            assert waiting == 1
            channel.queue_delete(queue)
    finally:
        executor.close_sync()


class FakeRuntime:
    """Stands for `jobs.runtime.Runtime` (tested on its own): records runs and hand-backs."""

    def __init__(self, seconds: dict[str, float], *, broken_broker: bool = False) -> None:
        self.seconds = seconds
        self.ran: list[str] = []
        self.handed_back: list[list[str]] = []
        self.broken_broker = broken_broker
        self.dispatcher = self
        self.executor = self

    async def run(self, job_id: str) -> str:
        self.ran.append(job_id)
        if self.seconds.get(job_id) == -1:
            raise RuntimeError("database down")
        await asyncio.sleep(self.seconds.get(job_id, 0))
        return "succeeded"

    async def deliver(self, deliveries: list[Delivery]) -> None:
        if self.broken_broker:
            raise ConnectionError("broker down")
        self.handed_back.append([d.job_id for d in deliveries])


def worker_with(runtime: FakeRuntime) -> _WorkerState:
    state = _WorkerState(Settings(_env_file=None), app=None)
    state._runtime = runtime
    return state


async def test_a_batch_runs_in_turn_and_hands_back_what_waits_behind_a_slow_job():
    runtime = FakeRuntime({"b": HAND_BACK_AFTER * 4})
    await worker_with(runtime).run_batch(jobs("default", "a", "b", "c", "d"))
    assert runtime.ran == ["a", "b"]
    assert runtime.handed_back == [["c", "d"]]


async def test_a_batch_of_quick_jobs_runs_whole_in_one_process():
    runtime = FakeRuntime({})
    await worker_with(runtime).run_batch(jobs("default", "a", "b", "c"))
    assert runtime.ran == ["a", "b", "c"]
    assert runtime.handed_back == []


async def test_jobs_that_add_up_past_the_hand_back_time_hand_back_the_rest(monkeypatch):
    monkeypatch.setattr(celery_executor, "HAND_BACK_AFTER", 0.4)  # wide margins either side
    monkeypatch.setattr(celery_executor, "BATCH_SECONDS", 0.5)
    runtime = FakeRuntime(dict.fromkeys("abcd", 0.3))  # none is slow on its own
    await worker_with(runtime).run_batch(jobs("default", *"abcd"))
    assert runtime.ran == ["a", "b"]  # b would end at 0.6 s: the rest leaves at 0.5 s
    assert runtime.handed_back == [["c", "d"]]


async def test_what_cannot_be_handed_back_runs_here_and_a_failed_run_stops_nothing():
    runtime = FakeRuntime({"a": -1, "b": HAND_BACK_AFTER * 3}, broken_broker=True)
    await worker_with(runtime).run_batch(jobs("default", "a", "b", "c"))
    assert runtime.ran == ["a", "b", "c"]
    assert runtime.handed_back == []
