"""Start, watch and stop the streaming query (`activity stream run`)."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from activity_settings import ActivityError, Settings
from infra.kafka_access import KafkaAccessError, admin_client, cluster_metadata
from infra.reachability import ServiceUnavailable, kafka_requirement, redis_requirement, require_all
from infra.topics import topic_offsets
from streaming import metrics
from streaming.paths import StreamPaths

if TYPE_CHECKING:
    from pyspark.sql.streaming import StreamingQuery

    from streaming.job import BatchGate

log = logging.getLogger("activity.stream")


class StreamError(ActivityError, RuntimeError):
    """The stream cannot start or stopped on an error; the message says what to do."""


@dataclass(frozen=True)
class StreamSummary:
    batches: int
    input_rows: int
    caught_up: bool


_serving_metrics_on: set[int] = set()


# Each micro-batch is parsed once into Spark's cache and read from it four times (keys, aggregates,
# dead letters, archive) before it is dropped: compressing it costs more than it saves. Larger Arrow
# batches between the JVM and the Python workers cut per-batch overhead of the parse.
STREAM_SPARK_CONF = {
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "50000",
}
# How long a stop waits for the batch in flight; `activity up` gives the stream 120 s to exit.
STOP_GRACE_S = 90.0
COMMIT_WAIT_S = 10.0


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve this process's Prometheus registry on ``host:port`` (once per port and process)."""
    from prometheus_client import start_http_server

    if port not in _serving_metrics_on:
        start_http_server(port, addr=host)
        _serving_metrics_on.add(port)


def _committed_offsets(progress: dict | None) -> dict[int, int] | None:
    if not progress or not progress.get("sources"):
        return None
    end = progress["sources"][0].get("endOffset")
    if isinstance(end, str):
        end = json.loads(end)
    if not end:
        return None
    (partitions,) = end.values()
    return {int(partition): int(offset) for partition, offset in partitions.items()}


def caught_up(settings: Settings, progress: dict | None) -> bool:
    """True when the query has processed everything that is on the topic now."""
    committed = _committed_offsets(progress)
    if committed is None:
        return False
    latest = topic_offsets(settings.kafka, settings.kafka.topics.transactions)
    return all(committed.get(partition, low) >= high for partition, (low, high) in latest.items())


@dataclass
class _Progress:
    """The batches reported so far: metrics, a line per batch with records, and the totals."""

    report: Callable[[str], None]
    batches: int = 0
    rows: int = 0
    last_id: int = -1

    def take(self, recent: Sequence[Mapping[str, Any]]) -> None:
        for progress in recent:
            if progress["batchId"] > self.last_id:
                self.last_id = progress["batchId"]
                metrics.record_progress(progress)
                self.batches += 1
                self.rows += progress.get("numInputRows", 0)
                if progress.get("numInputRows"):
                    self.report(f"batch {progress['batchId']}: {progress['numInputRows']:,} records, "
                                f"{progress.get('processedRowsPerSecond') or 0:,.0f}/s")


def _stop_between_batches(query: StreamingQuery, gate: BatchGate, grace_s: float,
                          report: Callable[[str], None]) -> None:
    """Stop the query once the batch in flight is done and committed; a batch that begins meanwhile is not run."""
    if not gate.close(grace_s):
        report(f"the batch in flight did not finish within {grace_s:.0f} s of the stop; stopping it "
               "(it is read again at the next start)")
    elif gate.last_batch is not None:  # Spark commits a batch after its handler returned, then reports it
        deadline = time.monotonic() + COMMIT_WAIT_S
        while query.isActive and not gate.waiting and time.monotonic() < deadline:
            progress = query.lastProgress
            if progress is not None and progress["batchId"] >= gate.last_batch:
                break
            time.sleep(0.02)
    stopping = threading.Thread(target=query.stop, name="activity-stream-stop")
    stopping.start()
    while stopping.is_alive() and query.isActive:
        time.sleep(0.02)
    gate.release()  # the query is TERMINATED: a batch waiting at the gate fails as interrupted
    stopping.join()


def run_stream(
    settings: Settings,
    *,
    until_idle_s: float | None = None,
    report: Callable[[str], None] = lambda _: None,
    stop_grace_s: float = STOP_GRACE_S,
) -> StreamSummary:
    """Run until stopped (SIGINT/SIGTERM), or, with ``until_idle_s``, until caught up and idle that long.

    A stop lets the batch in flight finish (up to ``stop_grace_s``) and starts no new one, so the query stops
    between batches; a batch cut short is not committed and is read again at the next start.
    """
    kafka = settings.kafka
    try:  # nothing listening fails here within seconds, naming the setting and the command that starts it
        require_all(kafka_requirement(kafka), redis_requirement(settings.feature_store))
    except ServiceUnavailable as exc:
        raise StreamError(str(exc)) from None
    try:  # a refused login or certificate fails here within about a second, naming the settings
        topics = cluster_metadata(*admin_client(kafka), timeout_s=10.0).topics
    except KafkaAccessError as exc:
        where = "setting kafka.bootstrap_servers" if not kafka.embedded else "run `activity stack up`"
        raise StreamError(str(exc) if exc.refused else f"{exc} ({where})") from None
    if kafka.topics.transactions not in topics:
        raise StreamError(f"topic {kafka.topics.transactions!r} does not exist at {kafka.bootstrap} "
                          "(`activity stack up` creates it; setting kafka.topics.transactions names it)")
    paths = StreamPaths.of(settings)
    for directory in (paths.checkpoint, paths.state, paths.archive):
        directory.mkdir(parents=True, exist_ok=True)
    if settings.streaming.metrics_port:
        serve_metrics(settings.streaming.metrics_port, settings.streaming.metrics_host)
        report(f"metrics on http://127.0.0.1:{settings.streaming.metrics_port}/metrics")
    # Feast and PySpark take seconds to import (tens on a loaded machine): deferred until the services
    # above answered, so that a missing one is reported at once, and so that the CLI can import StreamError.
    from features.store import FeatureWriter
    from infra.spark import spark_session
    from streaming.job import MicroBatch, read_kafka

    spark = spark_session(settings, "activity-stream", STREAM_SPARK_CONF)
    writer = FeatureWriter.open(settings)
    handler = MicroBatch(settings, spark, writer, paths)
    report(f"Spark's Python workers and the batch path warmed up in {handler.warm_up():.1f} s")
    interval = settings.streaming.trigger_interval_s
    query = (
        read_kafka(spark, settings).writeStream.queryName("activity_features")
        .foreachBatch(handler.process)
        .option("checkpointLocation", str(paths.checkpoint))
        .trigger(processingTime=f"{interval} seconds")
        .start()
    )
    report(f"streaming {settings.kafka.topics.transactions} from {settings.kafka.bootstrap} "
           f"(checkpoint {paths.checkpoint})")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    seen = _Progress(report)
    idle_since: float | None = None
    try:
        while not stop.is_set() and query.isActive:
            time.sleep(0.5)
            seen.take(query.recentProgress)
            if until_idle_s is not None:
                if caught_up(settings, query.lastProgress):
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= until_idle_s:
                        break
                else:
                    idle_since = None
        error = query.exception()
        if error is not None:
            raise StreamError(f"the streaming query failed: {error}")
        done = until_idle_s is not None and idle_since is not None
    finally:
        _stop_between_batches(query, handler.gate, stop_grace_s, report)
        try:
            handler.close()  # the last batch's fold and a snapshot still being written
        except Exception as exc:  # what a next batch would have failed the query with
            raise StreamError(f"writing the last batch's features failed: {exc}") from exc
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    error = query.exception()  # a stop is not one; a batch that failed while the query stopped is
    if error is not None:
        raise StreamError(f"the streaming query failed while stopping: {error}")
    seen.take(query.recentProgress)  # the batch the stop waited for
    return StreamSummary(batches=seen.batches, input_rows=seen.rows, caught_up=done)
