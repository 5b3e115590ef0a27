"""A pandas twin of ``streaming.aggregate.daily_partials`` for tests that need feature states without Spark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.state import CHANNELS, MERCHANT_CATEGORIES
from streaming.history import PARTIAL_COLUMNS

DAY_S = 86_400


def partials_of(table: pa.Table) -> pd.DataFrame:
    """Events -> ``PARTIAL_COLUMNS`` per (customer, UTC day), as ``daily_partials`` computes them (the
    merchant sketch hashes differently from Spark's xxhash64: any hash is a valid state here)."""
    columns = ["customer_id", "amount", "event_time", "merchant_id", "merchant_category", "channel"]
    frame = table.select([*columns, *(["kind"] if "kind" in table.column_names else [])]).to_pandas()
    refund = frame["kind"].fillna("purchase").ne("purchase") if "kind" in frame else pd.Series(False, frame.index)
    refunds = frame[refund]
    frame = frame[~refund].copy()
    frame["seconds"] = (frame["event_time"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    frame["day"] = (frame["seconds"] // DAY_S).astype(np.int64)
    frame["night"] = (frame["event_time"].dt.hour < 6).astype(np.int64)
    frame["category_bit"] = np.left_shift(1, frame["merchant_category"].map(MERCHANT_CATEGORIES.index).to_numpy())
    merchant_hash = pd.util.hash_array(frame["merchant_id"].to_numpy(dtype=object)) % np.uint64(64)
    frame["merchant_bit"] = np.left_shift(np.int64(1), merchant_hash.astype(np.int64))
    for channel in CHANNELS:
        frame[f"ch_{channel}"] = (frame["channel"] == channel).astype(np.int64)
    keys = ["customer_id", "day"]
    out = frame.groupby(keys).agg(
        count=("amount", "size"), night=("night", "sum"), spend=("amount", "sum"), max_amount=("amount", "max"),
        first_s=("seconds", "min"), last_s=("seconds", "max"),
        **{f"ch_{channel}": (f"ch_{channel}", "sum") for channel in CHANNELS})
    for column, bit in (("category_mask", "category_bit"), ("merchant_bits", "merchant_bit")):
        out[column] = frame.drop_duplicates([*keys, bit]).groupby(keys)[bit].sum()  # distinct bits: sum = or
    if len(refunds):  # refunds and reversals, counted apart; a day of refunds alone has no purchase figures
        refunds = refunds.assign(day=((refunds["event_time"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
                                      // DAY_S).astype(np.int64), refund_amount=-refunds["amount"])
        apart = refunds.groupby(keys).agg(refunds=("amount", "size"), refund_amount=("refund_amount", "sum"))
        out = out.join(apart, how="outer")
        filled = {name: 0 for name in PARTIAL_COLUMNS if name not in ("first_s", "last_s")}
        out = out.fillna({name: value for name, value in filled.items() if name in out.columns})
    else:
        out = out.assign(refunds=0, refund_amount=0.0)
    return out.reset_index()[list(PARTIAL_COLUMNS)]
