"""Per-(customer, day) partial aggregates of valid events: the one Spark aggregation.

The stream applies it to each micro-batch, the backfill to the whole raw archive; the result
has exactly ``streaming.history.PARTIAL_COLUMNS`` and feeds ``ActivityHistory.merge``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.state import CHANNELS, ENTITY_KEY, MERCHANT_CATEGORIES, MERCHANT_SKETCH_BITS

NIGHT_END_HOUR = 6  # a transaction before 06:00 UTC is a night transaction
MERCHANT_BIT = f"CAST(pmod(xxhash64(merchant_id), {MERCHANT_SKETCH_BITS}) AS INT)"  # its bit in the daily sketch


def event_day(column: str = "event_time") -> Column:
    """Days since 1970-01-01 (UTC) of a timestamp column."""
    return F.floor(F.unix_micros(F.col(column)) / F.lit(86_400_000_000)).cast("long")


def daily_partials(events: DataFrame) -> DataFrame:
    """Aggregate valid events (contract columns, ``event_time`` a timestamp) per customer and day."""
    seconds = F.unix_micros(F.col("event_time")) / F.lit(1_000_000.0)
    category = F.array_position(F.array(*(F.lit(name) for name in MERCHANT_CATEGORIES)), F.col("merchant_category"))
    return events.groupBy(F.col(ENTITY_KEY), event_day().alias("day")).agg(
        F.count(F.lit(1)).cast("int").alias("count"),
        F.sum((F.hour("event_time") < NIGHT_END_HOUR).cast("int")).cast("int").alias("night"),
        *(F.sum((F.col("channel") == channel).cast("int")).cast("int").alias(f"ch_{channel}") for channel in CHANNELS),
        F.sum("amount").alias("spend"),
        F.max("amount").alias("max_amount"),
        F.bit_or(F.pow(F.lit(2), category - 1).cast("long")).alias("category_mask"),
        F.expr(f"bit_or(shiftleft(CAST(1 AS BIGINT), {MERCHANT_BIT})) AS merchant_bits"),
        F.min(seconds).alias("first_s"),
        F.max(seconds).alias("last_s"),
    )
