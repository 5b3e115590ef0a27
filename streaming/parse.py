"""Parse and validate raw Kafka records in Spark with the contract's own validator.

``parse_records`` runs inside Spark's Python workers (``mapInArrow``), so the stream, the
backfill and the unit tests all apply exactly ``streaming.schema.check_document``: there is
no second copy of the rules in Spark SQL to drift apart from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from streaming.schema import EARLIEST_EVENT_TIME, PURCHASE, InvalidEvent, check_document, decode_value

# The record's topic, key and raw value are kept for rejected records only (the dead-letter topic
# carries them); a valid record's are null, which keeps them out of Spark's Python round trip.
PARSED_SCHEMA = pa.schema([
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("key", pa.binary()),
    ("value", pa.binary()),
    ("error_code", pa.string()),  # null for a valid event
    ("error_message", pa.string()),
    ("transaction_id", pa.string()),
    ("customer_id", pa.string()),
    ("amount", pa.float64()),
    ("currency", pa.string()),
    ("event_time", pa.timestamp("us", tz="UTC")),
    ("merchant_id", pa.string()),
    ("merchant_category", pa.string()),
    ("channel", pa.string()),
    ("kind", pa.string()),  # "purchase" for a version 1 event
])
PARSED_DDL = (
    "topic STRING, partition INT, offset BIGINT, key BINARY, value BINARY, error_code STRING, "
    "error_message STRING, transaction_id STRING, customer_id STRING, amount DOUBLE, currency STRING, "
    "event_time TIMESTAMP, merchant_id STRING, merchant_category STRING, channel STRING, kind STRING"
)
_TEXT_FIELDS = ("transaction_id", "customer_id", "currency", "merchant_id", "merchant_category", "channel", "kind")


def parse_batch(batch: pa.RecordBatch, now: datetime, earliest: datetime = EARLIEST_EVENT_TIME) -> pa.RecordBatch:
    """Validate one Arrow batch of Kafka records (topic, partition, offset, key, value)."""
    values = batch.column("value").to_pylist()
    rows = len(values)
    code: list[str | None] = [None] * rows
    message: list[str | None] = [None] * rows
    text: dict[str, list[str | None]] = {name: [None] * rows for name in _TEXT_FIELDS}
    amount: list[float | None] = [None] * rows
    moment: list[datetime | None] = [None] * rows
    for i, raw in enumerate(values):
        document = decode_value(raw)
        checked = document if isinstance(document, InvalidEvent) else check_document(document, now, earliest)
        if isinstance(checked, InvalidEvent):
            code[i], message[i] = checked.code.value, checked.message
            continue
        for name in _TEXT_FIELDS:
            text[name][i] = document.get(name, PURCHASE)  # only kind may be absent (version 1)
        amount[i] = float(document["amount"])
        moment[i] = checked
    codes = pa.array(code, pa.string())
    rejected = codes.is_valid()

    def if_rejected(name: str, kind: pa.DataType) -> pa.Array:
        return pc.if_else(rejected, batch.column(name).cast(kind), pa.scalar(None, kind))

    return pa.RecordBatch.from_arrays(
        [
            if_rejected("topic", pa.string()),
            batch.column("partition").cast(pa.int32()),
            batch.column("offset").cast(pa.int64()),
            if_rejected("key", pa.binary()),
            if_rejected("value", pa.binary()),
            codes,
            pa.array(message, pa.string()),
            *(pa.array(text[name], pa.string()) for name in ("transaction_id", "customer_id")),
            pa.array(amount, pa.float64()),
            pa.array(text["currency"], pa.string()),
            pa.array(moment, pa.timestamp("us", tz="UTC")),
            *(pa.array(text[name], pa.string()) for name in ("merchant_id", "merchant_category", "channel", "kind")),
        ],
        schema=PARSED_SCHEMA,
    )


def parse_records(batches: Iterator[pa.RecordBatch],
                  earliest: datetime = EARLIEST_EVENT_TIME) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` entry point: validated rows; a rejected one with its raw record for the dead-letter topic."""
    now = datetime.now(UTC)
    for batch in batches:
        yield parse_batch(batch, now, earliest)
