"""The prediction log read back: what the scorer answered, as a frame.

A bounded read of the ``predictions`` topic: every partition from the first record logged at or
after ``since`` up to the end offsets seen when the read starts, so a job reads a fixed window
even while the scorer keeps logging.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import numpy as np
import orjson
import pandas as pd
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from activity_settings import KafkaSettings
from model_contract.labels import CLASSES

COLUMNS = ["request_id", "customer_id", "as_of", "label", *[f"p_{name}" for name in CLASSES],
           "model_name", "model_version", "arm", "degraded", "shadow", "logged_at"]


def read_predictions(kafka: KafkaSettings, since: datetime | None = None, timeout_s: float = 30.0) -> pd.DataFrame:
    """Prediction records logged at or after ``since`` (all when None), one row per record.

    Columns: ``COLUMNS``; ``as_of`` and ``logged_at`` are UTC timestamps, ``label`` the class
    index, ``model_version`` a string (``None`` for the class-prior and heuristic fallbacks).
    """
    topic = kafka.topics.predictions
    consumer = Consumer({
        **kafka.client_config(),
        "group.id": f"activity-monitor-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    })
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            return _frame([], [])
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
                for p in partitions}
        starts = _start_offsets(consumer, topic, partitions, since, timeout_s)
        todo = {p for p in partitions if starts[p] < ends[p]}
        if not todo:
            return _frame([], [])
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(todo)])
        values: list[bytes | None] = []
        stamps: list[int] = []
        while todo:
            for message in consumer.consume(10_000, timeout=1.0):
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.discard(partition)
                        continue
                    raise KafkaException(error)
                offset = message.offset()
                if offset is None:  # only error events lack one, and those are handled above
                    raise RuntimeError(f"a message on {topic} partition {partition} has no offset")
                if offset >= ends[partition]:
                    todo.discard(partition)
                    continue
                values.append(message.value())
                stamps.append(message.timestamp()[1])
                if offset + 1 >= ends[partition]:
                    todo.discard(partition)
        return _frame(values, stamps)
    finally:
        consumer.close()


def _start_offsets(consumer: Consumer, topic: str, partitions: list[int], since: datetime | None,
                   timeout_s: float) -> dict[int, int]:
    if since is None:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[0] for p in partitions}
    millis = int(since.timestamp() * 1000)
    found = consumer.offsets_for_times([TopicPartition(topic, p, millis) for p in partitions], timeout=timeout_s)
    starts = {}
    for tp in found:
        if tp.offset == OFFSET_END or tp.offset < 0:  # nothing logged since then
            starts[tp.partition] = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                                                  timeout=timeout_s)[1]
        else:
            starts[tp.partition] = tp.offset
    return starts


def _frame(values: list[bytes | None], stamps: list[int]) -> pd.DataFrame:
    rows = []
    for value, stamp in zip(values, stamps, strict=True):
        if value is None:
            continue  # a null value: not written by the scorer
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue  # not written by the scorer
        if not isinstance(record, dict) or record.get("class") not in CLASSES or not record.get("customer_id"):
            continue
        model = record.get("model") or {}
        probabilities = record.get("probabilities") or {}
        version = model.get("version")
        rows.append((
            record.get("request_id"), record["customer_id"], record.get("as_of"), CLASSES.index(record["class"]),
            *[float(probabilities.get(name, np.nan)) for name in CLASSES],
            model.get("name"), None if version is None else str(version), model.get("arm"),
            bool(record.get("degraded", False)), bool(record.get("shadow", False)), stamp,
        ))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True, format="ISO8601")
    frame["logged_at"] = pd.to_datetime(frame["logged_at"].astype("int64"), unit="ms", utc=True)
    return frame
