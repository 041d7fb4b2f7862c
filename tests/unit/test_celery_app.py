"""The Celery settings whose failure modes the fault suite found (docs/architecture.md, "Delivery guarantees")."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from kombu.transport import redis as kombu_redis

import workers.celery_app  # noqa: F401  (installs the guard)
from workers.tasks.execute import execute
from workers.tasks.maintenance import reconcile_task
from workers.tasks.webhooks import sweep


@pytest.mark.parametrize("transport", [None, SimpleNamespace(client=None)], ids=["no transport", "no client"])
def test_a_channel_whose_broker_connection_broke_refuses_with_a_connection_error_not_a_crash(transport):
    # What Celery leaves after Redis broke: the old channel's transport, or its client, is gone.
    channel = SimpleNamespace(connection=transport, do_restore=True)
    # The late ack of a job that finished after the reconnect: a connection error, which Celery logs.
    with pytest.raises(kombu_redis.Transport.connection_errors):
        kombu_redis.Channel._connparams(channel)
    # The close's restore of unacknowledged messages: a connection error, which Celery ignores on close.
    channel.conn_or_acquire = lambda client=None: kombu_redis.Channel.conn_or_acquire(channel, client)
    channel._create_client = lambda asynchronous=False: kombu_redis.Channel._connparams(channel)
    qos = kombu_redis.QoS(channel, prefetch_count=1)
    qos._delivered["tag-1"] = object()
    with pytest.raises(kombu_redis.Transport.connection_errors):
        qos.restore_unacked_once()


def test_the_periodic_passes_ack_early_and_jobs_ack_late():
    assert reconcile_task.acks_late is False and sweep.acks_late is False
    assert execute.acks_late is True


def test_a_worker_retries_the_broker_every_2_s_at_most(monkeypatch):
    from celery.worker.consumer import Consumer

    from workers.celery_app import QuickReconnectConsumer, app

    assert app.conf.worker_consumer == "workers.celery_app:QuickReconnectConsumer"
    seen = {}

    class Conn:
        def ensure_connection(self, *args, **kwargs):
            seen.update(kwargs)
            return self

    monkeypatch.setattr(Consumer, "ensure_connected", lambda self, conn: conn.ensure_connection(None, None))
    QuickReconnectConsumer.ensure_connected(object.__new__(QuickReconnectConsumer), Conn())
    assert seen == {"interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def test_beat_retries_the_broker_every_2_s_at_most_too():
    from workers.celery_app import QuickReconnectScheduler, app

    assert app.conf.beat_scheduler == "workers.celery_app:QuickReconnectScheduler"
    seen = {}

    class Conn:
        def ensure_connection(self, errback, max_retries, **kwargs):
            seen.update(kwargs, max_retries=max_retries)
            return self

    scheduler = object.__new__(QuickReconnectScheduler)
    scheduler.__dict__.update(connection=Conn(), app=app)
    scheduler._ensure_connected()
    assert seen == {"interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0, "max_retries": None}


def test_a_broken_connection_pushes_back_only_the_messages_no_thread_has_started(monkeypatch):
    from celery.worker import state
    from celery.worker.consumer import Consumer

    from workers.celery_app import QuickReconnectConsumer

    delivered = {"running": object(), "reserved": object()}
    channel = SimpleNamespace(_qos=SimpleNamespace(_delivered=delivered))
    consumer = object.__new__(QuickReconnectConsumer)
    consumer.connection = SimpleNamespace(transport=SimpleNamespace(channels=[channel]))
    running = SimpleNamespace(message=SimpleNamespace(delivery_tag="running"))
    monkeypatch.setattr(state, "active_requests", [running])
    restored = []
    monkeypatch.setattr(Consumer, "on_connection_error_after_connected",
                        lambda self, exc: restored.extend(delivered))  # what kombu's close then restores
    consumer.on_connection_error_after_connected(ConnectionError("gone"))
    assert restored == ["reserved"]


def test_task_events_sent_by_many_jobs_go_out_in_one_flush_per_window():
    from workers.celery_app import EVENT_FLUSH_SECONDS, QuickReconnectConsumer

    class Hub:
        def __init__(self):
            self.soon, self.later = [], []

        def call_soon(self, fn):
            self.soon.append(fn)

        def call_later(self, delay, fn):
            self.later.append((delay, fn))

    flushes = []
    consumer = object.__new__(QuickReconnectConsumer)
    consumer.hub = Hub()
    consumer.event_dispatcher = type("Dispatcher", (), {"flush": lambda self: flushes.append(1)})()
    for _ in range(50):  # task-received/started/succeeded of many jobs, from their threads
        consumer.on_send_event_buffered()
    assert len(consumer.hub.soon) == 1 and not flushes
    consumer.hub.soon[0]()  # the loop's next tick schedules the flush on its timer
    assert [delay for delay, _ in consumer.hub.later] == [EVENT_FLUSH_SECONDS]
    consumer.hub.later[0][1]()
    assert flushes == [1]
    consumer.on_send_event_buffered()  # the next window's first event schedules the next flush
    assert len(consumer.hub.soon) == 2


def test_after_a_broken_connection_the_next_task_event_schedules_a_flush_again(monkeypatch):
    from celery.worker import state
    from celery.worker.consumer import Consumer

    from workers.celery_app import QuickReconnectConsumer

    soon = []
    consumer = object.__new__(QuickReconnectConsumer)
    consumer.hub = SimpleNamespace(call_soon=soon.append)
    consumer.connection = None
    consumer.on_send_event_buffered()  # its flush was due on the loop of the connection that then broke
    monkeypatch.setattr(state, "active_requests", [])
    monkeypatch.setattr(Consumer, "on_connection_error_after_connected", lambda self, exc: None)
    consumer.on_connection_error_after_connected(ConnectionError("gone"))
    consumer.on_send_event_buffered()
    assert len(soon) == 2


def test_a_channel_reuses_one_redis_client_for_its_publishes_deliveries_and_acks(redis_url, monkeypatch):
    import redis
    from kombu import Connection, Exchange, Queue

    queue = Queue("mjq-test-shared-client", Exchange("mjq-test-shared-client", type="direct"),
                  routing_key="mjq-test-shared-client")
    received: list[int] = []
    with Connection(redis_url) as conn:
        channel = conn.channel()
        producer = conn.Producer(channel)
        consumer = conn.Consumer(queue, channel=channel, callbacks=[lambda body, message: (
            received.append(body["n"]), message.ack())])
        producer.publish({"n": -1}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])
        with consumer:
            conn.drain_events(timeout=2)  # warm: the channel's clients and pools exist now
            built = []
            original = redis.Redis.__init__

            def counting(self: redis.Redis, *args: object, **kwargs: object) -> None:
                built.append(1)
                original(self, *args, **kwargs)  # type: ignore[arg-type]

            monkeypatch.setattr(redis.Redis, "__init__", counting)
            for n in range(20):
                producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key)
            while len(received) < 21:
                conn.drain_events(timeout=2)
            monkeypatch.undo()
        client = redis.Redis.from_url(redis_url)
        assert client.llen(queue.name) == 0 and client.hlen("unacked") == 0  # every message delivered and acked
        queue(channel).delete()
        channel.close()
    assert received == [-1, *range(20)]
    assert built == []  # kombu alone built a client per publish, per delivery and per ack: 60 here


def test_a_producer_declares_a_queue_once_per_connection_and_binds_no_copy_to_publish(redis_url, monkeypatch):
    import redis
    from kombu import Connection, Exchange, Queue, abstract, entity

    queue = Queue("mjq-test-declare-once", Exchange("mjq-test-declare-once", type="direct"),
                  routing_key="mjq-test-declare-once")
    declared: list[str] = []
    bound: list[str] = []
    declare, bind = entity.Queue.declare, abstract.MaybeChannelBound.bind

    def counting_declare(self: entity.Queue, *args: object, **kwargs: object) -> object:
        declared.append(self.name)
        return declare(self, *args, **kwargs)

    def counting_bind(self: abstract.MaybeChannelBound, channel: object) -> object:
        bound.append(type(self).__name__)
        return bind(self, channel)

    monkeypatch.setattr(entity.Queue, "declare", counting_declare)
    monkeypatch.setattr(abstract.MaybeChannelBound, "bind", counting_bind)
    for connection_number in range(2):
        with Connection(redis_url) as conn:
            producer = conn.Producer(conn.channel())
            for n in range(10):
                # as Celery publishes a job: the queue to declare, with retries
                producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key,
                                 declare=[queue], retry=True)
                if n == 0:
                    assert declared == [queue.name] * (connection_number + 1)  # each new connection declares it
                    bound.clear()
            assert declared == [queue.name] * (connection_number + 1)  # and only once
            assert bound == []  # kombu alone binds a copy of the queue and its exchange to the channel per publish
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen(queue.name) == 20  # every message reached the queue
    finally:
        client.delete(queue.name)
        client.close()
