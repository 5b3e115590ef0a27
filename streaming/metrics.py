"""Prometheus metrics of the streaming job (``activity_stream_*``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

BATCHES = Counter("activity_stream_batches_total", "Micro-batches processed.")
INPUT_ROWS = Counter("activity_stream_input_rows_total", "Records read from the transactions topic.")
VALID_ROWS = Counter("activity_stream_valid_events_total", "Valid, accepted events.")
DLQ_ROWS = Counter("activity_stream_dlq_events_total", "Events sent to the dead-letter topic.")
DUPLICATES = Counter("activity_stream_duplicate_events_total", "Events dropped as duplicates (also dead-lettered).")
LATE = Counter("activity_stream_late_events_total", "Events behind the event-time watermark (counted, kept).")
TOO_LATE = Counter("activity_stream_too_late_events_total",
                   "Partial aggregates older than a customer's history; fixed by `stream backfill --reconcile`.")
NOT_PURCHASES = Counter("activity_stream_refund_events_total",
                        "Accepted refunds and reversals: archived, not counted as activity.")
CUSTOMERS_WRITTEN = Counter("activity_stream_online_writes_total", "Customer states written to the online store.")
INPUT_RATE = Gauge("activity_stream_input_rows_per_second", "Input rate of the last micro-batch.")
PROCESS_RATE = Gauge("activity_stream_processed_rows_per_second", "Processing rate of the last micro-batch.")
BATCH_DURATION = Histogram("activity_stream_batch_duration_seconds", "Micro-batch wall time.",
                           buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60))
LAG = Gauge("activity_stream_consumer_lag_messages", "Messages behind the latest offsets (max over partitions).")
FRESHNESS = Histogram("activity_stream_freshness_seconds",
                      "Event time to online write, for the median and 99th-percentile event of each batch.",
                      buckets=(0.5, 1, 2, 3, 5, 8, 13, 30, 60, 300, 3600, 86400))
FRESHNESS_P99 = Gauge("activity_stream_freshness_p99_seconds", "Freshness of the last batch's 99th-percentile event.")
WATERMARK = Gauge("activity_stream_watermark_seconds", "Event-time watermark (epoch seconds).")
LAST_BATCH = Gauge("activity_stream_last_batch_timestamp_seconds", "When the last micro-batch finished.")


def record_batch(figures: dict) -> None:
    BATCHES.inc()
    VALID_ROWS.inc(figures.get("valid", 0) - figures.get("duplicates", 0))
    DLQ_ROWS.inc(figures.get("rejected", 0))
    DUPLICATES.inc(figures.get("duplicates", 0))
    LATE.inc(figures.get("late", 0))
    TOO_LATE.inc(figures.get("too_late", 0))
    NOT_PURCHASES.inc(figures.get("not_purchases", 0))
    CUSTOMERS_WRITTEN.inc(figures.get("customers", 0))
    BATCH_DURATION.observe(figures["duration_s"])
    for key in ("freshness_p50_s", "freshness_p99_s"):
        if figures.get(key) is not None:
            FRESHNESS.observe(figures[key])
    if figures.get("freshness_p99_s") is not None:
        FRESHNESS_P99.set(figures["freshness_p99_s"])
    if figures.get("watermark_s") not in (None, float("-inf")):
        WATERMARK.set(figures["watermark_s"])
    LAST_BATCH.set(figures["written_at"])


def record_progress(progress: Mapping[str, Any]) -> None:
    """Figures Spark reports per trigger (``StreamingQuery.lastProgress``)."""
    INPUT_ROWS.inc(progress.get("numInputRows", 0))
    INPUT_RATE.set(progress.get("inputRowsPerSecond") or 0)
    PROCESS_RATE.set(progress.get("processedRowsPerSecond") or 0)
    for source in progress.get("sources", []):
        behind = (source.get("metrics") or {}).get("maxOffsetsBehindLatest")
        if behind is not None:
            LAG.set(float(behind))
