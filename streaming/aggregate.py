"""Per-(customer, day) partial aggregates of valid events: the one Spark aggregation.

The stream applies it to each micro-batch, the backfill to the whole raw archive; the result
has exactly ``streaming.history.PARTIAL_COLUMNS`` and feeds ``ActivityHistory.merge``. Every
column describes the day's purchases except ``refunds`` and ``refund_amount``, which count the
refunds and reversals apart (a day of refunds alone has ``count`` 0).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.state import CHANNELS, ENTITY_KEY, MERCHANT_CATEGORIES, MERCHANT_SKETCH_BITS
from streaming.schema import PURCHASE

NIGHT_END_HOUR = 6  # a transaction before 06:00 UTC is a night transaction
MERCHANT_BIT = f"CAST(pmod(xxhash64(merchant_id), {MERCHANT_SKETCH_BITS}) AS INT)"  # its bit in the daily sketch


def event_day(column: str = "event_time") -> Column:
    """Days since 1970-01-01 (UTC) of a timestamp column."""
    return F.floor(F.unix_micros(F.col(column)) / F.lit(86_400_000_000)).cast("long")


def daily_partials(events: DataFrame) -> DataFrame:
    """Aggregate valid events (contract columns, ``event_time`` a timestamp) per customer and day.

    Events without a ``kind`` column (an archive from before contract version 2) are purchases.
    """
    seconds = F.unix_micros(F.col("event_time")) / F.lit(1_000_000.0)
    category = F.array_position(F.array(*(F.lit(name) for name in MERCHANT_CATEGORIES)), F.col("merchant_category"))
    bought = (F.coalesce(F.col("kind"), F.lit(PURCHASE)) == PURCHASE) if "kind" in events.columns else F.lit(True)

    def purchases(column: Column) -> Column:  # the column on purchases, null on refunds and reversals
        return F.when(bought, column)

    def total(column: Column, zero: object = 0) -> Column:  # no purchase that day: zero, not null
        return F.coalesce(column, F.lit(zero))

    return events.groupBy(F.col(ENTITY_KEY), event_day().alias("day")).agg(
        F.count(purchases(F.lit(1))).cast("int").alias("count"),
        total(F.sum(purchases((F.hour("event_time") < NIGHT_END_HOUR).cast("int")))).cast("int").alias("night"),
        *(total(F.sum(purchases((F.col("channel") == channel).cast("int")))).cast("int").alias(f"ch_{channel}")
          for channel in CHANNELS),
        total(F.sum(purchases(F.col("amount"))), 0.0).alias("spend"),
        total(F.max(purchases(F.col("amount"))), 0.0).alias("max_amount"),
        total(F.bit_or(purchases(F.pow(F.lit(2), category - 1).cast("long")))).alias("category_mask"),
        total(F.bit_or(purchases(F.expr(f"shiftleft(CAST(1 AS BIGINT), {MERCHANT_BIT})")))).alias("merchant_bits"),
        F.min(purchases(seconds)).alias("first_s"),
        F.max(purchases(seconds)).alias("last_s"),
        F.count(F.when(~bought, F.lit(1))).cast("int").alias("refunds"),
        total(F.sum(F.when(~bought, -F.col("amount"))), 0.0).alias("refund_amount"),
    )
