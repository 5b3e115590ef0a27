"""`activity stream run`: Kafka `transactions` -> validated, deduplicated daily history -> Feast.

One Structured Streaming query reads the topic; each micro-batch (``MicroBatch.process``):

1. parses and validates every record with the contract's validator (in Spark's Python workers);
2. decides duplicates and late events against the driver-side ``StreamState`` and logs them;
3. aggregates accepted events per (customer, day) in Spark;
4. writes rejects to `transactions.dlq` and accepted events to the raw archive (Spark jobs), while
   a driver thread folds the batch's aggregates into the history and writes the changed
   customers' state to Feast online and offline — all idempotent per batch id.

The fold of one batch runs on while Spark reads and parses the next one (at most one batch
behind): Spark commits a batch once its decisions are logged and its Spark sinks written, and
the next batch waits for the fold before it is decided. If the process dies with a committed
batch's fold unfinished, recovery folds it again from its log and repeats its Feast writes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from activity_settings import Settings
from features.store import FeatureWriter
from streaming import metrics
from streaming.aggregate import daily_partials, event_day
from streaming.history import PARTIAL_COLUMNS, MergeResult
from streaming.parse import PARSED_DDL, parse_records
from streaming.paths import StreamPaths
from streaming.schema import EARLIEST_EVENT_TIME, PURCHASE, ErrorCode, example_event
from streaming.stream_state import SECONDS_PER_DAY, BatchLog, StreamState

log = logging.getLogger("activity.stream")

ARCHIVE_COLUMNS = ("transaction_id", "customer_id", "amount", "currency", "event_time", "merchant_id",
                   "merchant_category", "channel", "kind", "partition", "offset")


def read_kafka(spark: SparkSession, settings: Settings) -> DataFrame:
    kafka, stream = settings.kafka, settings.streaming
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka.bootstrap)
        .option("subscribe", kafka.topics.transactions)
        .option("startingOffsets", stream.starting_offsets)
        .option("maxOffsetsPerTrigger", stream.max_offsets_per_trigger)
        .option("failOnDataLoss", str(stream.fail_on_data_loss).lower())
    )
    for key, value in spark_kafka_options(settings).items():
        reader = reader.option(key, value)
    return reader.load()


def spark_kafka_options(settings: Settings) -> dict[str, str]:
    """Security settings for Spark's Kafka clients (the Java client's property names)."""
    kafka = settings.kafka
    options: dict[str, str] = {"kafka.security.protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if kafka.sasl_mechanism == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        options["kafka.sasl.mechanism"] = kafka.sasl_mechanism
        options["kafka.sasl.jaas.config"] = (
            f'{module} required username="{kafka.sasl_username}" password="{kafka.sasl_password}";'
        )
    if kafka.ssl_ca_location:
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = str(kafka.ssl_ca_location)
    return options


def parse(raw: DataFrame, earliest: datetime = EARLIEST_EVENT_TIME) -> DataFrame:
    """Raw Kafka rows -> validated rows (``streaming.parse.PARSED_DDL``); ``earliest``: the stale floor."""
    return raw.select("topic", "partition", "offset", "key", "value").mapInArrow(
        partial(parse_records, earliest=earliest), PARSED_DDL)


def one_line(error: BaseException) -> str:
    """An error's qualified type and the first two lines of its text (a Py4J error: the call and the Java exception)."""
    kind = type(error)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()][:2]
    return f"{kind.__module__}.{kind.__qualname__}: {' '.join(lines)[:600]}"


class BatchFailed(RuntimeError):
    """A batch failed; the stream's log holds the full traceback, this message names the cause in one line.

    Spark 4.2 tells a stop from a failure by matching a regex with a recursive group against the text of a
    foreachBatch error; the text of a Py4J error (a Java stack trace inside a Python one) overflows the query
    thread's stack, which kills the thread with no exception recorded. One line keeps both cases right: an
    interruption by a stop is recognised as one, a failure is recorded and named by ``query.exception()``.
    """

    @classmethod
    def of(cls, batch_id: int, error: BaseException) -> Self:
        return cls(f"batch {batch_id}: {one_line(error)}")


class StreamStopping(BatchFailed):
    """A batch began after a stop was asked for: it is not committed and is read again at the next start."""


class BatchGate:
    """Lets a stop wait for the batch in flight, and keeps a batch from starting once a stop was asked for.

    Stopping a Spark query cancels the Spark jobs of the batch it runs and interrupts its thread; nothing of
    that batch is committed, it is read again at the next start. ``close`` makes a stop between batches the
    rule. A batch that begins after it (Spark starts the next one as soon as the last one is committed)
    waits in ``enter`` until the stop is under way (``release``) and is then not run.
    """

    def __init__(self, release_timeout_s: float = 300.0) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._closed = False
        self._released = False
        self._release_timeout_s = release_timeout_s
        self.last_batch: int | None = None  # the last batch that ran
        self.waiting = False  # a batch waits to be turned away

    def enter(self, batch_id: int) -> bool:
        """A batch begins: False once closed (after ``release``, or a timeout): the batch must not run."""
        with self._changed:
            if self._closed:
                self.waiting = True
                self._changed.notify_all()
                self._changed.wait_for(lambda: self._released, self._release_timeout_s)
                return False
            self._busy = True
            self.last_batch = batch_id
            return True

    def leave(self) -> None:
        with self._changed:
            self._busy = False
            self._changed.notify_all()

    def close(self, timeout_s: float) -> bool:
        """No batch starts from now on; wait up to ``timeout_s`` for the one in flight. False if it still runs."""
        with self._changed:
            self._closed = True
            return self._changed.wait_for(lambda: not self._busy, timeout_s)

    def release(self) -> None:
        """The stop is under way: a batch waiting in ``enter`` goes on to fail as interrupted."""
        with self._changed:
            self._released = True
            self._changed.notify_all()


def _not_a_stop(record: logging.LogRecord) -> bool:
    """Py4J logs every error raised by the foreachBatch handler with its traceback; a stop is not an error."""
    return not (record.exc_info and isinstance(record.exc_info[1], StreamStopping))


@dataclass(frozen=True)
class Classification:
    """A new batch's valid rows (keys in offset order) judged against the stream state."""

    keys: pd.DataFrame  # partition, offset, transaction_id, customer_id, event_s
    duplicate: np.ndarray  # bool per key row
    late: np.ndarray  # bool per key row
    duplicates: pd.DataFrame  # partition, offset, transaction_id of the duplicate rows
    invalid: int  # rows that failed validation


@dataclass
class MicroBatch:
    """The foreachBatch handler; owns the driver-side state between batches."""

    settings: Settings
    spark: SparkSession
    writer: FeatureWriter
    paths: StreamPaths
    state: StreamState = field(init=False)
    _folding: ThreadPoolExecutor = field(init=False, repr=False)
    _folded: Future[None] | None = field(default=None, init=False, repr=False)
    gate: BatchGate = field(default_factory=BatchGate, init=False, repr=False)

    def __post_init__(self) -> None:
        logging.getLogger("py4j.clientserver").addFilter(_not_a_stop)
        lateness = self.settings.streaming.allowed_lateness_hours * 3600
        self._folding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="activity-fold")
        self.state = StreamState.recover(self.paths.state, lateness, last_committed_batch(self.paths.checkpoint),
                                         refold=self._refold)
        log.info("recovered stream state through batch %s (%s customers)", self.state.applied_batch,
                 self.state.history.size)

    def close(self) -> None:
        """Finish the last batch's fold and a snapshot being written; raise if either failed."""
        try:
            self.wait_for_fold()
        finally:
            self._folding.shutdown(wait=True)
            self.state.close()

    def wait_for_fold(self) -> None:
        """Block until the previous batch's fold and Feast writes are done; raise if they failed."""
        folded, self._folded = self._folded, None
        if folded is not None:
            folded.result()

    def warm_up(self, records: int = 2_000) -> float:
        """Run the batch's Spark work once on made-up records, before the query starts.

        The first micro-batch otherwise pays for starting Spark's Python workers (each imports
        the contract and pyarrow) and for the JVM compiling the parse and aggregation paths; a
        stream that starts behind a backlog would see that first batch's freshness suffer.
        Nothing is written anywhere. Returns the seconds it took.
        """
        started = time.time()
        event = example_event()
        values = [json.dumps({**event, "transaction_id": f"warm-up-{i}", "customer_id": f"warm-up-{i % 50}"}).encode()
                  if i % 100 else b"{not json" for i in range(records)]
        rows = [("warm-up", i % 4, i, None, value) for i, value in enumerate(values)]
        frame = self.spark.createDataFrame(rows, "topic STRING, partition INT, offset BIGINT, key BINARY, value BINARY")
        spread = frame.repartition(self.spark.sparkContext.defaultParallelism)  # every core's Python worker
        parsed = self._parse(spread).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            parsed.select("partition", "offset", "transaction_id", "customer_id",
                          F.unix_micros("event_time").alias("event_us")).toPandas()
            daily_partials(parsed.where(F.col("error_code").isNull())).toPandas()
        finally:
            parsed.unpersist()
        return time.time() - started

    def _parse(self, raw: DataFrame) -> DataFrame:
        return parse(raw, self.settings.streaming.earliest_event_time)

    def process(self, raw: DataFrame, batch_id: int) -> None:
        started = time.time()
        if not self.gate.enter(batch_id):
            raise self._turned_away(batch_id)
        try:
            parsed = self._parse(raw).persist(StorageLevel.MEMORY_AND_DISK)
            try:
                self._process(raw, parsed, batch_id, started)
            finally:
                parsed.unpersist()
        except Exception as exc:
            log.exception("batch %s failed; it is not committed and is read again at the next start", batch_id)
            raise BatchFailed.of(batch_id, exc) from None
        finally:
            self.gate.leave()

    def _turned_away(self, batch_id: int) -> StreamStopping:
        """The error a batch that began during a stop fails with: the interruption of the query's thread.

        PySpark runs the handler's calls into the JVM on the query's own thread (pinned threads), which the
        stop has interrupted: a sleep there raises that interruption, and Spark takes it for the stop it is.
        """
        jvm = self.spark.sparkContext._jvm
        try:
            if jvm is not None:
                jvm.java.lang.Thread.sleep(1)
        except Exception as interrupted:
            return StreamStopping.of(batch_id, interrupted)
        return StreamStopping(f"batch {batch_id} began while the stream was stopping; it is read again at the "
                              "next start")

    def _process(self, raw: DataFrame, parsed: DataFrame, batch_id: int, started: float) -> None:
        phases: dict[str, float] = {}
        lap = _stopwatch(phases)
        if batch_id != self.state.applied_batch + 1:
            raise RuntimeError(f"batch {batch_id} does not follow the stream state's batch {self.state.applied_batch}")
        if batch_id and batch_id % self.settings.streaming.snapshot_every_batches == 0:
            self.wait_for_fold()  # a snapshot holds folded batches only
            self.state.snapshot()  # every applied batch is committed now: Spark started the next one
        batch_log = self.state.read_log(batch_id)  # present when Spark re-runs a batch it did not commit
        replay = batch_log is not None
        sinks: Future[int] = Future()
        # The Spark sinks (dead letters, archive) start as soon as the duplicates are known and run
        # while the batch is aggregated and, after it is logged, folded into the history and written
        # to Feast: all are idempotent per batch id. Spark commits the batch when this returns.
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="activity-sinks")
        try:
            if batch_log is not None:
                classified = None
                duplicates, invalid = batch_log.duplicates, int(batch_log.meta["invalid"])
            else:
                classified = self._classify(parsed)
                duplicates, invalid = classified.duplicates, classified.invalid
            lap("parse_and_collect_keys")
            rejected = pool.submit(self._send_dead_letters, raw, parsed, duplicates, invalid, batch_id)
            archived = pool.submit(self._archive, self._accepted(parsed.where(F.col("error_code").isNull()),
                                                                 duplicates), batch_id)
            if classified is not None:
                batch_log = self._aggregate(parsed, batch_id, classified)
                lap("aggregate")
                self.state.write_log(batch_log)
                lap("log")
            assert batch_log is not None  # read back (a re-run) or aggregated just now
            self.wait_for_fold()  # the previous batch's: decisions and folds go in batch order
            lap("wait_for_previous_fold")
            self.state.admit(batch_log)
            self._record_late(batch_log, batch_id)
            self._folded = self._folding.submit(self._fold_and_write, batch_log, started, phases, replay, sinks)
            archived.result()
            count = rejected.result()
            lap("spark_sinks")  # the last phase this thread records: the fold reports them once the sinks are done
            sinks.set_result(count)
        except BaseException as exc:
            if not sinks.done():
                sinks.set_exception(exc)
            raise
        finally:
            pool.shutdown(wait=True)

    def _refold(self, state: StreamState, batch_log: BatchLog) -> None:
        """Recovery: fold a committed batch whose Feast writes may not have finished, and write them again."""
        log.info("batch %s was committed before its fold finished: folding it again", batch_log.batch_id)
        self.state = state
        self._fold_and_write(batch_log, time.time(), {}, True, None)

    def _fold_and_write(self, batch_log: BatchLog, started: float, phases: dict[str, float], replay: bool,
                        sinks: Future[int] | None) -> None:
        """Merge the batch into the history; write the changed customers' states to Feast; record it."""
        lap = _stopwatch(phases)
        history = self.state.history
        created = pd.Timestamp.now(tz="UTC")
        days: list[pd.DataFrame] = []

        def end_of_day(result: MergeResult) -> None:  # one offline state per customer and event day
            days.append(history.export(result.changed, created=created))

        multi_day = batch_log.partials["day"].nunique() > 1
        merged = self.state.fold(batch_log, on_day=end_of_day if multi_day else None)
        days.insert(0, history.genesis(merged.new))  # customers first seen in this batch
        lap("merge")
        states = history.export(merged.changed, created=created)
        offline = pd.concat([*days, states] if not multi_day else days, ignore_index=True)
        lap("export")
        self.writer.write(states, batch_log.batch_id, offline)
        written = time.time()
        self.state.mark_written(batch_log.batch_id)
        lap("feast_write")
        rejected = sinks.result() if sinks is not None else self._dead_letters_sent(batch_log.batch_id)
        meta = batch_log.meta
        figures = {
            "batch_id": batch_log.batch_id, "started": started, "written_at": written, "replayed": replay,
            "valid": meta["valid"], "rejected": rejected, "duplicates": meta["duplicates"], "late": meta["late"],
            "not_purchases": meta.get("not_purchases", 0),
            "too_late": len(merged.too_late), "refunds_without_purchase": merged.unmatched_refunds,
            "customers": len(merged.changed), "max_event_s": meta["max_event_s"],
            "watermark_s": meta["watermark_s"], **_freshness(meta, written), "phases": phases,
            "duration_s": time.time() - started,
        }
        metrics.record_batch(figures)
        with self.paths.progress.open("a") as handle:
            handle.write(json.dumps(figures) + "\n")

    def _classify(self, parsed: DataFrame) -> Classification:
        """Collect the valid rows' keys and classify duplicates and late rows against the state."""
        rows: pd.DataFrame = (parsed.select("partition", "offset", "transaction_id", "customer_id",
                              (F.unix_micros("event_time") / 1e6).alias("event_s"),
                              (F.col("kind") != PURCHASE).alias("not_purchase"),
                              F.col("error_code").isNotNull().alias("invalid"))
                .toPandas())
        keys = (rows.loc[~rows["invalid"]].drop(columns="invalid")
                .sort_values(["partition", "offset"], kind="stable").reset_index(drop=True))
        verdict = self.state.classify(keys["transaction_id"].to_numpy(dtype=object),
                                      keys["event_s"].to_numpy(dtype=np.float64))
        duplicates = keys.loc[verdict.duplicate, ["partition", "offset", "transaction_id"]].reset_index(drop=True)
        return Classification(keys, verdict.duplicate, verdict.late, duplicates, int(rows["invalid"].sum()))

    def _aggregate(self, parsed: DataFrame, batch_id: int, classified: Classification) -> BatchLog:
        """Aggregate the accepted rows per customer and day: with the classification, the batch's log."""
        keys, duplicate, late = classified.keys, classified.duplicate, classified.late
        accepted = keys.loc[~duplicate]
        valid = parsed.where(F.col("error_code").isNull())
        # The history's activity is purchases; refunds and reversals only add to the lifetime totals.
        partials: pd.DataFrame = (daily_partials(self._accepted(valid, classified.duplicates)).toPandas()
                    if len(accepted) else pd.DataFrame(columns=list(PARTIAL_COLUMNS)))
        late_rows = keys.loc[late & ~duplicate]
        late_days = pd.DataFrame({"customer_id": late_rows["customer_id"],
                                  "day": (late_rows["event_s"] // SECONDS_PER_DAY).astype("int64")}).drop_duplicates()
        accepted_s = accepted["event_s"].to_numpy()
        max_event = float(accepted_s.max()) if len(accepted_s) else float("-inf")
        meta: dict[str, float] = {
            "valid": int(len(keys)), "invalid": classified.invalid, "duplicates": int(duplicate.sum()),
            "late": int((late & ~duplicate).sum()), "not_purchases": int(accepted["not_purchase"].sum()),
            "max_event_s": max(max_event, self.state.max_event_s), "watermark_s": self.state.watermark_s,
        }
        if len(accepted_s):  # the freshness of the batch's events (none: no figures)
            meta |= {"event_s_median": float(np.percentile(accepted_s, 50)),
                     "event_s_oldest_1pct": float(np.percentile(accepted_s, 1))}
        return BatchLog(batch_id=batch_id, duplicates=classified.duplicates,
                        accepted=pd.DataFrame({"transaction_id": accepted["transaction_id"],
                                               "day": (accepted["event_s"] // SECONDS_PER_DAY).astype("int64")}),
                        partials=partials, late=late_days, meta=meta)

    def _record_late(self, batch_log: BatchLog, batch_id: int) -> None:
        """Keep the (customer, day) pairs touched by late events for `stream backfill --reconcile`."""
        if batch_log.late.empty:
            return
        self.paths.late.mkdir(parents=True, exist_ok=True)
        batch_log.late.to_parquet(self.paths.late / f"batch={batch_id:012d}.parquet", index=False)

    def _offsets(self, duplicates: pd.DataFrame, *extra: str) -> DataFrame:
        """The duplicates' (partition, offset) pairs, and ``extra`` columns, as a small DataFrame to join on."""
        pairs = duplicates[["partition", "offset", *extra]].astype({"partition": "int32"})
        return F.broadcast(self.spark.createDataFrame(pairs))

    def _accepted(self, valid: DataFrame, duplicates: pd.DataFrame) -> DataFrame:
        if duplicates.empty:
            return valid
        return valid.join(self._offsets(duplicates), ["partition", "offset"], "left_anti")

    def _send_dead_letters(self, raw: DataFrame, parsed: DataFrame, duplicates: pd.DataFrame, invalid_rows: int,
                           batch_id: int) -> int:
        """Rejects and duplicates to the DLQ with their reason and source offset (once per batch).

        A reject's record is in ``parsed``; a duplicate's (valid, so not kept there) is read again
        from the batch's Kafka records, which happens only in a batch that has duplicates.
        """
        marker = self.paths.dlq_markers / f"{batch_id:012d}"
        if marker.exists():
            return self._dead_letters_sent(batch_id)
        if invalid_rows == 0 and duplicates.empty:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("0")
            return 0
        columns = ("topic", "partition", "offset", "key", "value", "error_code", "error_message")
        invalid = parsed.where(F.col("error_code").isNotNull()).select(*columns)
        if not duplicates.empty:
            duplicate_rows = (raw.join(self._offsets(duplicates, "transaction_id"), ["partition", "offset"])
                              .withColumn("error_code", F.lit(ErrorCode.DUPLICATE_TRANSACTION.value))
                              .withColumn("error_message", F.concat(F.lit("transaction_id "), F.col("transaction_id"),
                                                                    F.lit(" was already accepted"))))
            invalid = invalid.unionByName(duplicate_rows.select(*columns))
        dead = invalid.select(
            F.col("key"),
            F.col("value"),
            F.array(
                *(F.struct(F.lit(name).alias("key"), F.col(column).cast("string").cast("binary").alias("value"))
                  for name, column in (("source_topic", "topic"), ("source_partition", "partition"),
                                       ("source_offset", "offset"), ("error_code", "error_code"),
                                       ("error_message", "error_message")))
            ).alias("headers"),
        ).persist()
        count = dead.count()
        if count:
            writer = dead.write.format("kafka").option("kafka.bootstrap.servers", self.settings.kafka.bootstrap)
            for key, value in spark_kafka_options(self.settings).items():
                writer = writer.option(key, value)
            writer.option("topic", self.settings.kafka.topics.dlq).save()
        dead.unpersist()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(count))
        return count

    def _dead_letters_sent(self, batch_id: int) -> int:
        """How many records batch ``batch_id`` sent to the DLQ (0 if it sent none yet)."""
        marker = self.paths.dlq_markers / f"{batch_id:012d}"
        return int(marker.read_text() or 0) if marker.exists() else 0

    def _archive(self, accepted: DataFrame, batch_id: int) -> None:
        """Every accepted event, as parquet partitioned by day; a re-run overwrites its own batch."""
        target = self.paths.archive / f"batch={batch_id:012d}"
        (accepted.select(*ARCHIVE_COLUMNS).withColumn("day", event_day())
         .write.mode("overwrite").partitionBy("day").parquet(str(target)))


def last_committed_batch(checkpoint: Path) -> int:
    """The newest batch id Spark's checkpoint records as committed (-1 for none)."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("*") if p.name.isdigit()]
    return max(commits, default=-1)


def _stopwatch(phases: dict[str, float]) -> Callable[[str], None]:
    """``lap(name)``: record the seconds since the previous lap (or since this call) as phase ``name``."""
    clock = [time.time()]

    def lap(name: str) -> None:
        now = time.time()
        phases[name] = round(now - clock[0], 3)
        clock[0] = now

    return lap


def _freshness(meta: dict[str, float], written: float) -> dict[str, float | None]:
    """Event time -> online write: the median event's (p50) and the oldest 1 %'s (p99)."""
    median, oldest = meta.get("event_s_median"), meta.get("event_s_oldest_1pct")
    return {"freshness_p50_s": None if median is None else written - median,
            "freshness_p99_s": None if oldest is None else written - oldest}
