"""`activity stream backfill`: rebuild feature history in batch Spark with the stream's own code.

Reads every valid event from the raw archive (or the topic from its earliest offset), drops
duplicate transaction ids, aggregates per (customer, day) with ``daily_partials`` and folds the
days in order through ``ActivityHistory``, writing one offline state row per customer and
active day and each customer's final state online. Re-running it gives the same result; with
``customers`` it rebuilds only those (the reconcile of late events).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from activity_settings import Settings
from features.store import FeatureWriter
from streaming.aggregate import daily_partials
from streaming.history import ActivityHistory
from streaming.job import parse, spark_kafka_options
from streaming.paths import StreamPaths
from streaming.schema import PURCHASE

EVENT_COLUMNS = ("transaction_id", "customer_id", "amount", "currency", "event_time", "merchant_id",
                 "merchant_category", "channel", "kind")


@dataclass(frozen=True)
class BackfillSummary:
    events: int
    customers: int
    days: int
    offline_rows: int


def archived_events(spark: SparkSession, settings: Settings) -> DataFrame:
    """Every event the stream accepted, from the raw archive."""
    archive = StreamPaths.of(settings).archive
    if not any(archive.glob("batch=*/day=*")):
        raise FileNotFoundError(f"the raw archive {archive} is empty: run `activity stream run` first, "
                                "or backfill with --source kafka")
    events = spark.read.option("basePath", str(archive)).option("mergeSchema", "true").parquet(str(archive / "batch=*"))
    # an archive written before contract version 2 has no kind: all its events are purchases
    kind = F.coalesce(F.col("kind"), F.lit(PURCHASE)) if "kind" in events.columns else F.lit(PURCHASE)
    return events.withColumn("kind", kind).select(*EVENT_COLUMNS)


def topic_events(spark: SparkSession, settings: Settings) -> DataFrame:
    """Every valid event on the transactions topic, from its earliest offset."""
    reader = (spark.read.format("kafka")
              .option("kafka.bootstrap.servers", settings.kafka.bootstrap)
              .option("subscribe", settings.kafka.topics.transactions)
              .option("startingOffsets", "earliest").option("endingOffsets", "latest"))
    for key, value in spark_kafka_options(settings).items():
        reader = reader.option(key, value)
    parsed = parse(reader.load(), settings.streaming.earliest_event_time)  # the stream's floor, not the default
    return parsed.where(F.col("error_code").isNull()).select(*EVENT_COLUMNS)


def history_partials(events: DataFrame, customers: list[str] | None = None) -> pd.DataFrame:
    """The day partials (``streaming.aggregate.daily_partials``) of ``events``' unique transactions, by day:
    the purchases, and the refunds and reversals counted apart, as the stream's are."""
    if customers is not None:
        events = events.where(F.col("customer_id").isin(customers))
    unique = events.dropDuplicates(["transaction_id"])
    partials: pd.DataFrame = daily_partials(unique).toPandas()
    return partials.sort_values(["day", "customer_id"], kind="stable", ignore_index=True)


def write_history(
    partials: pd.DataFrame,
    writer: FeatureWriter,
    full: bool = True,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> BackfillSummary:
    """Replay day partials day by day into fresh state rows, offline and online.

    ``full``: the partials are every customer's, so the rows supersede earlier rebuilds.
    """
    if partials.empty:
        return BackfillSummary(0, 0, 0, 0)
    history = ActivityHistory()
    created = pd.Timestamp.now(tz="UTC")
    days = partials["day"].unique()
    frames = []
    for done, (_, day_partials) in enumerate(partials.groupby("day", sort=True), start=1):
        merged = history.merge(day_partials)
        frames += [history.genesis(merged.new), history.export(merged.changed, created=created)]
        progress(done, len(days))
    offline = pd.concat(frames, ignore_index=True)
    name = f"backfill-{created:%Y%m%dT%H%M%S%f}"
    writer.write_offline(offline, name=name)
    if full:  # a full rebuild supersedes earlier full and partial rebuilds
        writer.remove_offline("backfill-", keep=name)
    writer.write_online(history.export(np.arange(history.size), created=created))
    return BackfillSummary(events=int(partials["count"].sum()), customers=history.size, days=len(days),
                           offline_rows=len(offline))


def rebuild_history(
    events: DataFrame,
    writer: FeatureWriter,
    customers: list[str] | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> BackfillSummary:
    """Deduplicate, aggregate and replay ``events`` day by day into fresh state rows."""
    return write_history(history_partials(events, customers), writer, customers is None, progress)


def run_backfill(settings: Settings, source: str = "archive", reconcile: bool = False,
                 progress: Callable[[int, int], None] = lambda done, total: None) -> BackfillSummary:
    """`activity stream backfill`: full rebuild, or (``reconcile``) the customers with late events."""
    from infra.spark import spark_session

    spark = spark_session(settings, "activity-backfill")
    writer = FeatureWriter.open(settings)
    events = archived_events(spark, settings) if source == "archive" else topic_events(spark, settings)
    customers = None
    if reconcile:
        late = StreamPaths.of(settings).late
        files = sorted(late.glob("*.parquet"))
        customers = sorted(set(pd.concat([pd.read_parquet(f) for f in files])["customer_id"])) if files else []
        if not customers:
            return BackfillSummary(0, 0, 0, 0)
    return rebuild_history(events, writer, customers, progress)
