"""Publishing transactions: an idempotent producer (acks=all) that counts delivery reports."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from activity_settings import KafkaSettings

# Throughput-oriented but lossless: idempotence implies acks=all and ordered retries per
# partition. Only failed deliveries are reported back, so the per-message cost stays in C;
# delivered = queued - failed once flush() has drained the queue.
PRODUCER_CONFIG: dict[str, object] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 25,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 2_097_152,
    "delivery.report.only.error": True,
}


@dataclass
class DeliveryReport:
    queued: int = 0
    failed: int = 0
    undelivered: int = 0
    elapsed_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return self.queued - self.failed - self.undelivered

    @property
    def rate(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0


class TransactionPublisher:
    """Queue messages fast; ``close()`` waits for every delivery and returns the report."""

    def __init__(self, kafka: KafkaSettings, topic: str, overrides: dict[str, object] | None = None):
        self.topic = topic
        self.report = DeliveryReport()
        self._producer = Producer({**kafka.client_config(), **PRODUCER_CONFIG, **(overrides or {}),
                                   "on_delivery": self._on_delivery})
        self._started = time.perf_counter()

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.report.failed += 1
            name = err.name()
            self.report.errors[name] = self.report.errors.get(name, 0) + 1

    def publish(self, values: Sequence[bytes], keys: Sequence[bytes]) -> None:
        """Queue one message per (value, key); blocks only while the local queue is full."""
        produce, topic, poll = self._producer.produce, self.topic, self._producer.poll
        for value, key in zip(values, keys, strict=True):
            try:
                produce(topic, value, key)
            except BufferError:
                poll(0.05)
                while True:
                    try:
                        produce(topic, value, key)
                        break
                    except BufferError:
                        poll(0.05)
        self.report.queued += len(values)
        poll(0)

    def close(self, timeout_s: float = 120.0) -> DeliveryReport:
        remaining = self._producer.flush(timeout_s)
        self.report.undelivered = remaining
        self.report.elapsed_s = time.perf_counter() - self._started
        return self.report
