"""Reading a topic back: what arrived, for people (``activity topic tail``) and for tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException

from activity_settings import KafkaSettings
from infra.reachability import kafka_requirement, require


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", errors="replace") if value is not None else None
        return None


def read_topic(
    kafka: KafkaSettings,
    topic: str,
    *,
    from_beginning: bool = True,
    limit: int | None = None,
    idle_timeout_s: float = 5.0,
    batch: int = 10_000,
) -> Iterator[Record]:
    """Yield records until ``limit`` is reached or nothing new arrives for ``idle_timeout_s``.

    Raises ``ServiceUnavailable`` at once when nothing listens at the broker's address: a consumer alone
    would wait out ``idle_timeout_s`` and end as if the topic were empty.
    """
    require(kafka_requirement(kafka))
    consumer = Consumer({
        **kafka.client_config(),
        "group.id": f"activity-read-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
    })
    consumer.subscribe([topic])
    seen = 0
    idle_since = time.monotonic()
    try:
        while limit is None or seen < limit:
            messages = consumer.consume(batch, timeout=0.5)
            if not messages:
                if time.monotonic() - idle_since > idle_timeout_s:
                    return
                continue
            idle_since = time.monotonic()
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None  # a consumed message has both
                # A consumed message's headers: a list of (name, bytes) pairs, or None.
                headers = cast(list[tuple[str, bytes | None]], message.headers() or [])
                yield Record(partition, offset, message.key(), message.value(), message.timestamp()[1],
                             tuple(headers))
                seen += 1
                if limit is not None and seen >= limit:
                    return
    finally:
        consumer.close()
