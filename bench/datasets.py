"""Simulated histories for the training benchmarks, without Kafka in the way.

The simulator's events are written in the raw archive's layout (what the stream writes) and
the features are rebuilt from it with ``activity stream backfill``'s code (batch Spark, the
same aggregation and state as the stream), so training reads exactly what it would read after
streaming the same events; only the time to stream them is saved.
"""

from __future__ import annotations

import time
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from activity_settings import Settings
from streaming.paths import StreamPaths
from streaming.simulator import Population, make_population, simulate


def write_archive(settings: Settings, population: Population) -> int:
    """The population's whole history as one archived batch, partitioned by event day; returns events."""
    batch = StreamPaths.of(settings).archive / "batch=000000000000"
    offset = 0
    for table in simulate(population):
        if table.num_rows == 0:
            continue
        day = int(pc.min(table["event_time"]).cast(pa.int64()).as_py() // 86_400_000)
        archived = table.drop_columns(["schema_version"]).append_column(
            "partition", pa.array([0] * table.num_rows, pa.int32())).append_column(
            "offset", pa.array(np.arange(offset, offset + table.num_rows, dtype=np.int64)))
        target = batch / f"day={day}"
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(archived, target / "part-0.parquet")
        offset += table.num_rows
    (batch / "_SUCCESS").touch()
    return offset


def simulated_history(settings: Settings, customers: int, days: int, seed: int = 42,
                      start: date = date(2026, 1, 1)) -> tuple[Population, dict[str, float]]:
    """Archive + Feast features for a simulated population; returns it and the time each part took."""
    from streaming.backfill import run_backfill

    population = make_population(customers, start, days, seed=seed)
    started = time.perf_counter()
    events = write_archive(settings, population)
    simulated = time.perf_counter()
    summary = run_backfill(settings)
    assert summary.events == events, (summary.events, events)
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is not None:  # the JVM would compete for the cores with what is measured next
        spark.stop()
    return population, {"events": events, "simulate_s": simulated - started,
                        "backfill_s": time.perf_counter() - simulated}
