"""What the trainer reads besides Feast: daily transaction counts per customer, from the raw archive.

Labels count every accepted event, so they come from the archive the stream writes (one parquet
directory per micro-batch, partitioned by event day), not from the features being predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from activity_settings import Settings
from features.state import ENTITY_KEY
from streaming.paths import StreamPaths


class NoTrainingData(RuntimeError):
    """There is nothing (or too little) to train on; the message says what is missing."""


def archive_dataset(archive: Path) -> ds.Dataset:
    files = [str(path) for path in archive.glob("batch=*/day=*/*.parquet")]
    if not files:
        raise NoTrainingData(f"no archived events under {archive}: stream some transactions first "
                             "(`activity stream run`)")
    return ds.dataset(files, format="parquet", partitioning=ds.partitioning(
        pa.schema([("batch", pa.string()), ("day", pa.int64())]), flavor="hive"), partition_base_dir=str(archive))


def daily_counts(settings: Settings) -> pd.DataFrame:
    """``customer_id, day, count``: accepted transactions per customer and event day (epoch days, UTC)."""
    table = archive_dataset(StreamPaths.of(settings).archive).to_table(columns=[ENTITY_KEY, "day"])
    grouped = table.group_by([ENTITY_KEY, "day"]).aggregate([([], "count_all")])
    frame = grouped.rename_columns([ENTITY_KEY, "day", "count"]).to_pandas()
    frame["day"] = frame["day"].astype(np.int64)
    frame["count"] = frame["count"].astype(np.int64)
    return frame.sort_values([ENTITY_KEY, "day"], ignore_index=True)


def sample_customers(daily: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """Keep a uniform share of customers (all their days), for a capped training set."""
    customers = daily[ENTITY_KEY].unique()
    rng = np.random.default_rng(seed)
    kept = rng.choice(customers, size=max(1, int(round(len(customers) * share))), replace=False)
    return daily[daily[ENTITY_KEY].isin(kept)].reset_index(drop=True)
