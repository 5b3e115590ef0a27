"""Reading the raw archive back: accepted transactions per customer and event day.

The stream writes every accepted event to the archive (one parquet directory per micro-batch,
partitioned by event day). Labels, for training and for judging answered predictions alike,
count those events, not the features being predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from activity_settings import ActivityError, Settings
from features.state import ENTITY_KEY
from streaming.paths import StreamPaths
from streaming.schema import PURCHASE


class EmptyArchive(ActivityError):
    """Nothing has been archived yet; the message says where it looked."""


# What labels read; a file without ``kind`` (written before contract version 2) reads it as null: a purchase.
_LABEL_SCHEMA = pa.schema([(ENTITY_KEY, pa.string()), ("kind", pa.string()),
                           ("batch", pa.string()), ("day", pa.int64())])


def archive_dataset(archive: Path) -> ds.Dataset:
    files = [str(path) for path in archive.glob("batch=*/day=*/*.parquet")]
    if not files:
        raise EmptyArchive(f"no archived events under {archive}: stream some transactions first "
                           "(`activity stream run`)")
    return ds.dataset(files, format="parquet", schema=_LABEL_SCHEMA, partitioning=ds.partitioning(
        pa.schema([("batch", pa.string()), ("day", pa.int64())]), flavor="hive"), partition_base_dir=str(archive))


def daily_counts(settings: Settings) -> pd.DataFrame:
    """``customer_id, day, count``: accepted purchases per customer and event day (epoch days, UTC).

    Refunds and reversals are archived too, but they are not the activity being predicted.
    """
    dataset = archive_dataset(StreamPaths.of(settings).archive)
    table = dataset.to_table(columns=[ENTITY_KEY, "day", "kind"], filter=pc.field("kind").is_null()
                             | (pc.field("kind") == PURCHASE))
    grouped = table.group_by([ENTITY_KEY, "day"]).aggregate([([], "count_all")])
    frame = grouped.rename_columns([ENTITY_KEY, "day", "count"]).to_pandas()
    frame["day"] = frame["day"].astype(np.int64)
    frame["count"] = frame["count"].astype(np.int64)
    return frame.sort_values([ENTITY_KEY, "day"], ignore_index=True)
