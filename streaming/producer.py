"""Publishing transactions: an idempotent producer (acks=all) that counts delivery reports."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from confluent_kafka import KafkaError, Message, Producer

from activity_settings import KafkaSettings
from infra.kafka_access import ClientErrors
from infra.reachability import kafka_requirement, require

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
    """Queue messages fast; ``close()`` waits for every delivery and returns the report.

    A cluster that refuses the credentials or the certificate raises ``KafkaAccessError`` (naming the
    settings) from ``publish`` or ``close`` within about a second; librdkafka alone would retry until the
    flush timed out and report every message undelivered.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, overrides: dict[str, object] | None = None):
        require(kafka_requirement(kafka))  # no broker: one line naming the setting, not a flush timeout
        self.topic = topic
        self.report = DeliveryReport()
        self._errors = ClientErrors(kafka)
        # The callbacks hold the report and the errors, never this object: Python's cycle collector cannot see
        # through a librdkafka handle, so a cycle through it would keep the producer (and its connections) alive
        # until the process exits.
        self._producer = Producer({**kafka.client_config(), **PRODUCER_CONFIG, **(overrides or {}),
                                   "on_delivery": partial(_count_failure, self.report), "error_cb": self._errors})
        self._started = time.perf_counter()

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
                        self._check()
        self.report.queued += len(values)
        poll(0)
        self._check()

    def close(self, timeout_s: float = 120.0) -> DeliveryReport:
        deadline = time.perf_counter() + timeout_s
        remaining = len(self._producer)
        while remaining:  # in short flushes, so a refusal stops the wait
            remaining = self._producer.flush(max(0.0, min(1.0, deadline - time.perf_counter())))
            self._check()
            if time.perf_counter() >= deadline:
                break
        self.report.undelivered = remaining
        self.report.elapsed_s = time.perf_counter() - self._started
        return self.report

    def _check(self) -> None:
        """Drop what is queued and raise once the cluster has refused us (no retry will get it through)."""
        if self._errors.refusal is not None:
            self._producer.purge()
            self._errors.check()


def _count_failure(report: DeliveryReport, err: KafkaError | None, _msg: Message) -> None:
    if err is not None:
        report.failed += 1
        name = err.name()
        report.errors[name] = report.errors.get(name, 0) + 1
