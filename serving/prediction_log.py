"""The prediction log: every answer published to the ``predictions`` topic without slowing a request.

``produce`` only appends to librdkafka's in-memory queue (bounded by ``serving.prediction_buffer``
messages); a full queue (broker down or slow) drops the record and counts it, it never blocks or
fails the request. A daemon thread serves delivery reports; failed deliveries are counted too.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

from activity_settings import Settings
from serving.metrics import PREDICTION_LOG_DROPPED, PREDICTION_LOG_SENT

log = logging.getLogger(__name__)


class PredictionLog:
    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka.topics.predictions
        self.dropped = 0
        self.failed = 0
        self._stop = threading.Event()
        self._producer: Producer | None = Producer({
            **settings.kafka.client_config(),
            "queue.buffering.max.messages": settings.serving.prediction_buffer,
            "linger.ms": 20,
            "compression.type": "lz4",
            "acks": "1",
            "message.timeout.ms": 60_000,
        })
        self._poller = threading.Thread(target=self._poll, name="prediction-log", daemon=True)
        self._poller.start()

    def publish(self, key: str, record: dict[str, Any]) -> bool:
        """Queue one record; False (and counted) when the buffer is full or the log is closed."""
        if self._producer is None:
            self.dropped += 1
            PREDICTION_LOG_DROPPED.inc()
            return False
        try:
            self._producer.produce(self.topic, orjson.dumps(record), key.encode(), on_delivery=self._delivered)
        except (BufferError, KafkaException):
            self.dropped += 1
            PREDICTION_LOG_DROPPED.inc()
            return False
        return True

    def _delivered(self, error: object, message: object) -> None:
        if error is not None:
            self.failed += 1
            PREDICTION_LOG_DROPPED.inc()
        else:
            PREDICTION_LOG_SENT.inc()

    def _poll(self) -> None:
        producer = self._producer
        while producer is not None and not self._stop.is_set():
            producer.poll(0.2)

    def close(self, timeout_s: float = 5.0) -> int:
        """Flush what can be flushed in ``timeout_s``; returns the records still queued (then lost)."""
        self._stop.set()
        self._poller.join(timeout=2.0)
        producer, self._producer = self._producer, None  # released: librdkafka stops reconnecting
        left = producer.flush(timeout_s) if producer is not None else 0
        if left:
            log.warning("prediction log: %d records not delivered at shutdown", left)
        return left
