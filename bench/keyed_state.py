"""Per-customer state on Spark's executors: what each way of keeping it costs on this machine.

The stream keeps every customer's history on the driver (``streaming.stream_state``). Moving it to
the executors means a stateful operator keyed by customer, checkpointed in Spark's state store
(RocksDB). This measures the candidates on the same events, with the state already holding the
whole population (batch 0 seeds it; batch 1 is timed), against the driver's own work per batch:

* ``driver`` (the reference, today's design): the batch's keys collected and checked against the id
  log, its daily partial aggregates (``streaming.aggregate.daily_partials``) collected, folded into
  ``ActivityHistory`` day by day and the changed customers' states exported;
* ``executor_rows``: ``transformWithState`` (Spark 4.1's Python row API) keyed by customer;
* ``executor_pandas``: ``transformWithStateInPandas`` keyed by customer;
* ``executor_pandas_v1``: ``applyInPandasWithState`` keyed by customer;
* ``jvm_dedupe``: ``dropDuplicatesWithinWatermark`` on ``transaction_id`` (no Python);
* ``jvm_daily``: ``daily_partials`` as a streaming aggregation keyed by (customer, day) (no Python);
* ``jvm_dedupe_daily``: both, one after the other;
* ``validate``: the contract's validator as the stream runs it (``streaming.job.parse``, in Spark's Python
  workers) on the same events as Kafka records (JSON values): the stage every design keeps.

The three ``executor_*`` folds only add a count and a sum per customer (``ValueState``), far less than
the history fold: their figures bound from above what a Python fold on the executors can reach.
Every candidate's output goes to Spark's ``noop`` sink; the Kafka read, the contract's validation and
the Feast writes are not in any figure (``bench.ingest`` measures the whole stream).

    python -m bench.keyed_state [--customers 100000] [--events 1000000] [--days 3]
                                [--candidates driver,executor_rows,...] [--quick]

Progress goes to stderr; the table and one JSON line to stdout: per candidate ``<name>_s`` (seconds for
the timed batch) and ``<name>_tx_per_s``, then ``best_executor``, ``best_executor_tx_per_s`` and
``ratio_vs_driver`` (the best Python keyed state's rate over the driver's), and two ceilings, the rate
no stream of that design can pass here since these stages alone take the machine's cores that long:
``ceiling_jvm_state_tx_per_s`` (validation, then dedupe and daily aggregation in the JVM) and
``ceiling_python_state_tx_per_s`` (validation, dedupe in the JVM, the best Python keyed fold).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import log, machine, print_result

EVENT_DDL = ("transaction_id STRING, customer_id STRING, amount DOUBLE, event_time TIMESTAMP, merchant_id STRING, "
             "merchant_category STRING, channel STRING, kind STRING")
RECORD_DDL = "topic STRING, partition INT, offset BIGINT, key BINARY, value BINARY"
ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
EXECUTOR = ("executor_rows", "executor_pandas", "executor_pandas_v1")
JVM = ("jvm_dedupe", "jvm_daily", "jvm_dedupe_daily")
CANDIDATES = ("driver", *EXECUTOR, *JVM, "validate")
FOLD_DDL = "customer_id STRING, total DOUBLE, n BIGINT"
DUPLICATE_SHARE = 0.01  # of the timed batch: ids already seen in batch 0


def events(customers: int, count: int, days: int, seed: int, end: pd.Timestamp,
           repeat_ids: np.ndarray | None = None) -> pd.DataFrame:
    """``count`` contract-shaped events of ``customers`` customers over the ``days`` days before ``end``."""
    from features.state import CHANNELS, MERCHANT_CATEGORIES

    rng = np.random.default_rng(seed)
    ids = np.char.add(f"t{seed}-", np.arange(count).astype(str)).astype(object)
    if repeat_ids is not None and len(repeat_ids):
        take = min(int(count * DUPLICATE_SHARE), len(repeat_ids))
        ids[rng.choice(count, take, replace=False)] = rng.choice(repeat_ids, take, replace=False)
    seconds = rng.integers(0, days * 86_400, count)
    refund = rng.random(count) < 0.03  # refunds carry negative amounts
    return pd.DataFrame({
        "transaction_id": ids,
        "customer_id": np.char.add("c", rng.integers(0, customers, count).astype(str)).astype(object),
        "amount": np.where(refund, -1.0, 1.0) * np.round(rng.lognormal(3.0, 1.0, count), 2),
        "event_time": (end - pd.to_timedelta(seconds, unit="s")).astype("datetime64[us, UTC]"),
        "merchant_id": np.char.add("m", rng.integers(0, 5_000, count).astype(str)).astype(object),
        "merchant_category": rng.choice(np.array(MERCHANT_CATEGORIES, dtype=object), count),
        "channel": rng.choice(np.array(CHANNELS, dtype=object), count),
        "kind": np.where(refund, "refund", "purchase").astype(object),
    })


# ----------------------------------------------------------------------------------- the folds


def _fold_rows() -> Any:
    from pyspark.sql import Row
    from pyspark.sql.streaming import StatefulProcessor

    class CountAndSum(StatefulProcessor):  # type: ignore[misc]
        def init(self, handle: Any) -> None:
            self.state = handle.getValueState("fold", "total DOUBLE, n BIGINT")

        def handleInputRows(self, key: Any, rows: Iterator[Any], timerValues: Any) -> Iterator[Any]:
            total, n = self.state.get() if self.state.exists() else (0.0, 0)
            for row in rows:
                total += row.amount
                n += 1
            self.state.update((total, n))
            yield Row(customer_id=key[0], total=total, n=n)

        def close(self) -> None:
            pass

    return CountAndSum()


def _fold_pandas() -> Any:
    from pyspark.sql.streaming import StatefulProcessor

    class CountAndSum(StatefulProcessor):  # type: ignore[misc]
        def init(self, handle: Any) -> None:
            self.state = handle.getValueState("fold", "total DOUBLE, n BIGINT")

        def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
                            ) -> Iterator[pd.DataFrame]:
            total, n = self.state.get() if self.state.exists() else (0.0, 0)
            for frame in rows:
                total += float(frame["amount"].sum())
                n += len(frame)
            self.state.update((total, n))
            yield pd.DataFrame({"customer_id": [key[0]], "total": [total], "n": [n]})

        def close(self) -> None:
            pass

    return CountAndSum()


def _fold_v1(key: tuple[str], frames: Iterator[pd.DataFrame], state: Any) -> Iterator[pd.DataFrame]:
    total, n = state.get if state.exists else (0.0, 0)
    for frame in frames:
        total += float(frame["amount"].sum())
        n += len(frame)
    state.update((total, n))
    yield pd.DataFrame({"customer_id": [key[0]], "total": [total], "n": [n]})


def query(name: str, source: Any) -> tuple[Any, str]:
    """The streaming frame of candidate ``name`` over ``source`` and its output mode."""
    from pyspark.sql.streaming.state import GroupStateTimeout

    from streaming.aggregate import daily_partials

    watermarked = source.withWatermark("event_time", "7 days")
    by_customer = source.groupBy("customer_id")
    if name == "executor_rows":
        return by_customer.transformWithState(_fold_rows(), FOLD_DDL, "Update", "None"), "update"
    if name == "executor_pandas":
        return by_customer.transformWithStateInPandas(_fold_pandas(), FOLD_DDL, "Update", "None"), "update"
    if name == "executor_pandas_v1":
        return by_customer.applyInPandasWithState(_fold_v1, FOLD_DDL, "total DOUBLE, n BIGINT", "Update",
                                                  GroupStateTimeout.NoTimeout), "update"
    if name == "jvm_dedupe":
        return watermarked.dropDuplicatesWithinWatermark(["transaction_id"]), "append"
    if name == "jvm_daily":
        return daily_partials(watermarked), "update"
    if name == "jvm_dedupe_daily":
        return daily_partials(watermarked.dropDuplicatesWithinWatermark(["transaction_id"])), "update"
    raise ValueError(f"unknown candidate {name!r}: one of {', '.join(CANDIDATES)}")


def run_engine(spark: Any, name: str, batches: list[Path], work: Path) -> float:
    """Seed the state with ``batches[0]`` and return the seconds Spark takes for ``batches[1]``."""
    source_dir, checkpoint = work / f"{name}-source", work / f"{name}-checkpoint"
    source_dir.mkdir(parents=True)
    shutil.copy(batches[0], source_dir / "0.parquet")
    source = spark.readStream.schema(EVENT_DDL).option("maxFilesPerTrigger", 1).parquet(str(source_dir))
    frame, mode = query(name, source)

    def sink(batch: Any, batch_id: int) -> None:
        batch.write.format("noop").mode("overwrite").save()

    running = (frame.writeStream.outputMode(mode).option("checkpointLocation", str(checkpoint))
               .foreachBatch(sink).start())
    try:
        running.processAllAvailable()
        shutil.copy(batches[1], source_dir / "1.parquet")
        started = time.perf_counter()
        running.processAllAvailable()
        return time.perf_counter() - started
    finally:
        running.stop()


def run_driver(spark: Any, batches: list[Path], work: Path) -> float:
    """Today's per-batch driver work on ``batches[1]``, with the history and id log seeded by ``batches[0]``."""
    from pyspark.sql import functions as F

    from streaming.aggregate import daily_partials
    from streaming.stream_state import SECONDS_PER_DAY, StreamState

    state = StreamState(work, lateness_s=7 * SECONDS_PER_DAY)  # the stream's decisions and history, never saved

    def one(path: Path) -> None:
        frame = spark.read.schema(EVENT_DDL).parquet(str(path))
        keys = frame.select("transaction_id", (F.unix_micros("event_time") / 1e6).alias("event_s")).toPandas()
        ids, event_s = keys["transaction_id"].to_numpy(dtype=object), keys["event_s"].to_numpy(dtype=np.float64)
        duplicate = state.classify(ids, event_s).duplicate
        days = (event_s[~duplicate] // SECONDS_PER_DAY).astype(np.int64).tolist()
        state.seen.update(zip(ids[~duplicate].tolist(), days, strict=True))
        accepted = frame.join(F.broadcast(spark.createDataFrame(keys.loc[duplicate, ["transaction_id"]],
                                                                "transaction_id STRING")),
                              "transaction_id", "left_anti")
        partials: pd.DataFrame = daily_partials(accepted).toPandas()
        changed = [state.history.merge(day).changed for _, day in partials.groupby("day", sort=True)]
        state.history.export(np.unique(np.concatenate(changed)))

    one(batches[0])
    started = time.perf_counter()
    one(batches[1])
    return time.perf_counter() - started


def kafka_records(frame: pd.DataFrame) -> pd.DataFrame:
    """The events as the stream reads them from Kafka: one JSON value per record, in the contract's shape."""
    times = frame["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_numpy(dtype=object)
    columns = ("transaction_id", "customer_id", "amount", "merchant_id", "merchant_category", "channel", "kind")
    values = [json.dumps({"schema_version": 2, "transaction_id": t, "customer_id": c, "amount": a, "currency": "EUR",
                          "event_time": when, "merchant_id": m, "merchant_category": g, "channel": h, "kind": k}
                         ).encode() for (t, c, a, m, g, h, k), when
              in zip(frame[list(columns)].itertuples(index=False, name=None), times, strict=True)]
    return pd.DataFrame({"topic": "transactions", "partition": np.arange(len(frame), dtype=np.int32) % 4,
                         "offset": np.arange(len(frame), dtype=np.int64),
                         "key": frame["customer_id"].str.encode("utf-8"), "value": values})


def run_validate(spark: Any, records: list[Path]) -> float:
    """The contract's validator on ``records[1]``, after a run on ``records[0]`` that checks every record passes."""
    from pyspark.sql import functions as F

    from streaming.job import parse

    def parsed(path: Path) -> Any:
        return parse(spark.read.schema(RECORD_DDL).parquet(str(path)))

    rejected = parsed(records[0]).where(F.col("error_code").isNotNull()).select("error_message").head(1)
    if rejected:
        raise RuntimeError(f"the validator rejected a made-up event: {rejected[0][0]}")
    started = time.perf_counter()
    parsed(records[1]).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keyed_state", description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000, help="events per batch (two batches)")
    parser.add_argument("--days", type=int, default=3, help="the days a batch's event times span")
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help=f"comma-separated, from {', '.join(CANDIDATES)}")
    parser.add_argument("--quick", action="store_true", help="10,000 customers, 100,000 events (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.events = 10_000, 100_000
    names = [name.strip() for name in args.candidates.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        parser.error(f"--candidates: unknown {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")

    from activity_settings import load_settings
    from infra.spark import spark_session

    work = Path(tempfile.mkdtemp(prefix="bench-keyed-state-"))
    try:
        settings = load_settings(data_dir=work / "data")
        spark = spark_session(settings, "bench-keyed-state", {
            "spark.sql.streaming.stateStore.providerClass": ROCKSDB,
            "spark.sql.shuffle.partitions": str(machine_cores()),
        })
        end = pd.Timestamp("2026-06-01", tz="UTC")
        log(f"{args.events:,} events x 2 batches, {args.customers:,} customers, {args.days} days; {machine()}")
        first = events(args.customers, args.events, args.days, 0, end)
        second = events(args.customers, args.events, args.days, 1, end,
                        first["transaction_id"].to_numpy(dtype=object))
        batches = [work / "batch-0.parquet", work / "batch-1.parquet"]
        first.to_parquet(batches[0], index=False)
        second.to_parquet(batches[1], index=False)
        if "validate" in names:
            log("encoding the events as Kafka records")
            records = [work / "records-0.parquet", work / "records-1.parquet"]
            kafka_records(first).to_parquet(records[0], index=False)
            kafka_records(second).to_parquet(records[1], index=False)
        log("warming up the JVM")
        run_engine(spark, "jvm_daily", [batches[0], batches[0]], work / "warm-up")
        seconds: dict[str, float] = {}
        for name in names:
            log(f"{name} ...")
            if name == "driver":
                seconds[name] = run_driver(spark, batches, work / name)
            elif name == "validate":
                seconds[name] = run_validate(spark, records)
            else:
                seconds[name] = run_engine(spark, name, batches, work / name)
            log(f"{name}: {seconds[name]:.2f} s, {args.events / seconds[name]:,.0f} events/s")
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cores = machine_cores()
    print(f"\n{args.events:,} events of {args.customers:,} customers in the timed batch; {machine()}")
    print(f"{'candidate':<20} {'seconds':>8} {'events/s':>10} {'core-s per 1M':>14} {'vs driver':>10}")
    for name, value in seconds.items():
        ratio = f"{seconds['driver'] / value:.2f}" if "driver" in seconds else "-"
        print(f"{name:<20} {value:>8.2f} {args.events / value:>10,.0f} {value * cores * 1e6 / args.events:>14.1f} "
              f"{ratio:>10}")
    figures: dict[str, object] = {"customers": args.customers, "events": args.events, "days": args.days,
                                  "cores": cores}
    for name, value in seconds.items():
        figures[f"{name}_s"] = round(value, 2)
        figures[f"{name}_tx_per_s"] = round(args.events / value)
    if "validate" in seconds and "jvm_dedupe_daily" in seconds:  # no design does less on the executors than this
        figures["ceiling_jvm_state_tx_per_s"] = round(args.events / (seconds["validate"] + seconds["jvm_dedupe_daily"]))
    tried = [name for name in EXECUTOR if name in seconds]
    if tried:
        best = min(tried, key=seconds.__getitem__)
        figures["best_executor"] = best
        figures["best_executor_tx_per_s"] = round(args.events / seconds[best])
        if "driver" in seconds:
            figures["ratio_vs_driver"] = round(seconds["driver"] / seconds[best], 3)
        if "validate" in seconds and "jvm_dedupe" in seconds:
            figures["ceiling_python_state_tx_per_s"] = round(
                args.events / (seconds["validate"] + seconds["jvm_dedupe"] + seconds[best]))
    print_result(figures)
    return 0


def machine_cores() -> int:
    """The cores Spark's ``local[*]`` runs on: one shuffle partition each, and the figures' core-seconds."""
    import os

    return os.cpu_count() or 2


if __name__ == "__main__":
    raise SystemExit(main())
