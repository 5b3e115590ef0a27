"""The platform's Kafka topics, created idempotently on any cluster we are pointed at."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from activity_settings import KafkaSettings
from infra.kafka_access import admin_client, cluster_metadata


def topic_names(kafka: KafkaSettings) -> list[str]:
    topics = kafka.topics
    return [topics.transactions, topics.dlq, topics.predictions]


def ensure_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> dict[str, int]:
    """Create the missing topics; return each topic's partition count.

    A cluster that refuses our credentials or certificate fails within about a second, with a message naming
    the settings (``infra/kafka_access.py``), instead of after ``timeout_s`` with a transport error.
    """
    admin, errors = admin_client(kafka)
    existing = cluster_metadata(admin, errors, timeout_s).topics
    missing = [name for name in topic_names(kafka) if name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(name, kafka.partitions, kafka.replication_factor) for name in missing],
            operation_timeout=timeout_s,
        )
        for future in futures.values():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    return _wait_for_leaders(admin, topic_names(kafka), timeout_s)


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> dict[str, int]:
    """Block until every partition of ``names`` has a leader; return partition counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s)
        ready = all(
            name in metadata.topics and metadata.topics[name].error is None
            and all(p.leader >= 0 and p.error is None for p in metadata.topics[name].partitions.values())
            for name in names
        )
        if ready or time.monotonic() > deadline:
            return {name: len(metadata.topics[name].partitions) for name in names}
        time.sleep(0.1)


def topic_offsets(kafka: KafkaSettings, topic: str, timeout_s: float = 10.0) -> dict[int, tuple[int, int]]:
    """(low, high) watermark per partition; ``high - low`` messages are stored."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**kafka.client_config(), "group.id": "activity-inspect",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise KeyError(f"topic {topic!r} does not exist at {kafka.bootstrap}")
        return {
            partition: _watermarks(consumer, TopicPartition(topic, partition), timeout_s)
            for partition in sorted(metadata.topics[topic].partitions)
        }
    finally:
        consumer.close()


_ELECTION_ERRORS = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
})


def _watermarks(consumer, partition, timeout_s: float) -> tuple[int, int]:
    """Watermarks, retrying while a just-created partition's leader is still being elected."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=timeout_s)
        except KafkaException as exc:
            error = exc.args[0]
            retry = error.retriable() or error.code() in _ELECTION_ERRORS
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
