"""The point-in-time join as an as-of join: for each entity row, the newest stored row not after it.

A pure function of key columns, shared by the offline stores in ``features.offline_store``. It
never sees the stored values: only (customer, event time, write time) of every stored row and
(customer, time) of every entity row, so its cost is one sort of each side and one merge pass,
linear in entity rows plus stored rows; the values are fetched afterwards, only for the rows
that matched. A join of every entity row with every stored row of its customer (Feast's file
store) instead grows with their product.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NO_MATCH: Final = -1
# What the join's index holds per row (codes, times, positions and their sorted copies), a bound.
INDEX_BYTES_PER_ROW: Final = 128


def customer_codes(entity_keys: pa.ChunkedArray | pa.Array,
                   stored_keys: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The same int32 code for the same key on both sides, computed by Arrow (no Python strings)."""
    keys = pa.chunked_array([*_chunks(entity_keys), *_chunks(stored_keys)])
    unique = pc.unique(keys)
    entity = pc.index_in(entity_keys, value_set=unique).to_numpy(zero_copy_only=False)
    stored = pc.index_in(stored_keys, value_set=unique).to_numpy(zero_copy_only=False)
    return entity.astype(np.int32, copy=False), stored.astype(np.int32, copy=False)


def _chunks(array: pa.ChunkedArray | pa.Array) -> list[pa.Array]:
    return list(array.chunks) if isinstance(array, pa.ChunkedArray) else [array]


def as_of_match(entity_codes: np.ndarray, entity_times_us: np.ndarray, stored_codes: np.ndarray,
                stored_times_us: np.ndarray, stored_created_us: np.ndarray,
                ttl_us: int | None = None) -> np.ndarray:
    """For each entity row, the position of its match among the stored rows, or ``NO_MATCH``.

    The match of (customer, t) is the stored row of that customer with the latest event time
    ``<= t`` (and ``>= t - ttl_us`` when a TTL is given); among stored rows with that same event
    time, the latest written (``stored_created_us``). Entity rows may repeat and come in any order.
    """
    result = np.full(len(entity_codes), NO_MATCH, dtype=np.int64)
    if len(entity_codes) == 0 or len(stored_codes) == 0:
        return result
    left = pd.DataFrame({"t": np.asarray(entity_times_us, dtype=np.int64),
                         "k": np.asarray(entity_codes, dtype=np.int32),
                         "pos": np.arange(len(entity_codes), dtype=np.int64)})
    left = left.sort_values("t", kind="stable", ignore_index=True)
    order = np.lexsort((np.asarray(stored_created_us, dtype=np.int64), np.asarray(stored_times_us, dtype=np.int64)))
    right = pd.DataFrame({"t": np.asarray(stored_times_us, dtype=np.int64)[order],
                          "k": np.asarray(stored_codes, dtype=np.int32)[order],
                          "row": order.astype(np.int64)})
    # backward: the last right row (in its order: event time, then write time) whose time is <= the left's
    merged = pd.merge_asof(left, right, on="t", by="k", direction="backward", allow_exact_matches=True,
                           tolerance=ttl_us)
    rows = merged["row"].to_numpy(dtype=np.float64, na_value=np.nan)
    found = ~np.isnan(rows)
    result[merged["pos"].to_numpy()[found]] = rows[found].astype(np.int64)
    return result


def to_utc_microseconds(times: pd.Series | pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Epoch microseconds of UTC times (naive times are UTC); a missing time is the smallest int64."""
    if isinstance(times, pa.ChunkedArray | pa.Array):
        times = times.to_pandas()
    stamps = pd.DatetimeIndex(pd.to_datetime(times, utc=True))
    return stamps.floor("us").as_unit("us").asi8.astype(np.int64, copy=False)
