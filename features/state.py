"""The stored per-customer activity state: day-indexed history, packed into one binary value.

A state holds the customer's last ``HISTORY_DAYS`` daily aggregates ending on ``end_day`` (the
day of their latest transaction), so windows can be computed relative to any request time and
decay when the customer goes silent. It is stored in Feast as a single ``Bytes`` feature: a
fixed-layout record (``STATE_DTYPE``) that a batch of rows decodes in one ``np.frombuffer``
call, which keeps Feast's point-in-time join fast (array-typed features are not). The streaming
job and the backfill encode states; ``features.transform`` is the only reader. Stored, a state
is a header and one entry per *active* day (``HEADER_DTYPE``, ``DAY_DTYPE``): most customers are
active on a fraction of their 90 days, so this is several times smaller than the dense record.
Beside the window, the header keeps lifetime totals: purchases, their spend, and the refunds and
reversals (counted apart: they are not activity) with their amount.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STATE_VERSION: Final = 3  # 3: lifetime spend and refunds in the header
HISTORY_DAYS: Final = 90
MERCHANT_SKETCH_BITS: Final = 64  # per-day bitmap of hashed merchant ids (a linear-counting sketch)
CHANNELS: Final = ("in_store", "online", "mobile", "atm", "other")
MERCHANT_CATEGORIES: Final = (
    "grocery", "restaurants", "fuel", "retail", "travel",
    "entertainment", "utilities", "health", "online_services", "other",
)
NEVER: Final = -1_000_000  # the "day" of something that never happened
DAILY_COUNTS: Final = ("count", "night", *CHANNELS)  # rows of STATE_DTYPE["daily_counts"]

# Daily arrays run oldest first: element i is day ``end_day - HISTORY_DAYS + 1 + i``.
STATE_DTYPE: Final = np.dtype([
    ("version", "<i4"),
    ("end_day", "<i4"),
    ("first_day", "<i4"),
    ("total_count", "<i8"),
    ("last_event_s", "<f8"),
    ("total_spend", "<f8"),  # every purchase's amount, since the first
    ("refund_count", "<i8"),  # refunds and reversals, since the first purchase
    ("refund_amount", "<f8"),  # their amounts, as positive numbers
    ("daily_counts", "<i2", (len(DAILY_COUNTS), HISTORY_DAYS)),  # capped at 32,767 a day
    ("daily_spend", "<f8", (HISTORY_DAYS,)),
    ("daily_max", "<f4", (HISTORY_DAYS,)),
    ("category_last_day", "<i4", (len(MERCHANT_CATEGORIES),)),
    ("daily_merchant_bits", "<i8", (HISTORY_DAYS,)),  # bit (hash(merchant_id) mod 64) set per day
])

ENTITY_KEY: Final = "customer_id"
EVENT_TIMESTAMP: Final = "event_timestamp"
CREATED_TIMESTAMP: Final = "created_timestamp"
STATE_FEATURE: Final = "activity_state"


def empty_states(rows: int) -> np.ndarray:
    """Records for customers never seen (``version`` 0 marks them)."""
    states = np.zeros(rows, dtype=STATE_DTYPE)
    states["category_last_day"] = NEVER
    states["last_event_s"] = np.nan
    return states


# Stored form: a header, then one entry per active day (most days of most customers are empty).
HEADER_DTYPE: Final = np.dtype([
    ("version", "<i2"),
    ("active_days", "<i2"),
    ("end_day", "<i4"),
    ("first_day", "<i4"),
    ("total_count", "<i8"),
    ("last_event_s", "<f8"),
    ("category_last_day", "<i4", (len(MERCHANT_CATEGORIES),)),
    ("total_spend", "<f8"),
    ("refund_count", "<i8"),
    ("refund_amount", "<f8"),
])
DAY_DTYPE: Final = np.dtype([
    ("slot", "<u1"),
    ("counts", "<i2", (len(DAILY_COUNTS),)),
    ("spend", "<f8"),
    ("max", "<f4"),
    ("merchant_bits", "<i8"),
])
_SCALARS = ("version", "end_day", "first_day", "total_count", "last_event_s", "category_last_day", "total_spend",
            "refund_count", "refund_amount")


def encode_states(states: np.ndarray) -> list[bytes]:
    """One bytes value per record: its header and its active days."""
    return pack_states(*_stored_parts(states)).to_pylist()


def state_column(states: np.ndarray) -> pa.ChunkedArray:
    """``encode_states`` as an Arrow binary column (what the writers store), without Python objects."""
    return pack_states(*_stored_parts(states))


def _stored_parts(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    active = states["daily_counts"][:, 0, :] > 0
    rows, slots = np.nonzero(active)  # grouped by row, slots ascending
    headers = np.zeros(len(states), dtype=HEADER_DTYPE)
    for name in _SCALARS:
        headers[name] = states[name]
    headers["active_days"] = active.sum(axis=1)
    days = np.zeros(len(rows), dtype=DAY_DTYPE)
    days["slot"] = slots
    days["counts"] = states["daily_counts"][rows, :, slots]
    days["spend"] = states["daily_spend"][rows, slots]
    days["max"] = states["daily_max"][rows, slots]
    days["merchant_bits"] = states["daily_merchant_bits"][rows, slots]
    return headers, days


def pack_states(headers: np.ndarray, days: np.ndarray, chunk_rows: int = 200_000) -> pa.ChunkedArray:
    """One binary value per header: the header, then its ``active_days`` entries of ``days`` (in order).

    Built by Arrow from the two buffers as they are (no Python object per value); chunks of at
    most ``chunk_rows`` values keep each chunk's 32-bit offsets far from overflowing.
    """
    h, d = HEADER_DTYPE.itemsize, DAY_DTYPE.itemsize
    ends = np.cumsum(headers["active_days"].astype(np.int64))
    chunks = []
    for first in range(0, len(headers), chunk_rows):
        part = headers[first : first + chunk_rows]
        n = len(part)
        day_from = int(ends[first - 1]) if first else 0
        day_offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(part["active_days"].astype(np.int32) * d, out=day_offsets[1:])
        body = days[day_from : day_from + int(day_offsets[-1]) // d]
        head_offsets = np.arange(0, (n + 1) * h, h, dtype=np.int32)
        head = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(head_offsets), _bytes_of(part)])
        tail = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(day_offsets), _bytes_of(body)])
        chunks.append(pc.binary_join_element_wise(head, tail, b""))
    return pa.chunked_array(chunks, type=pa.binary())


def _bytes_of(records: np.ndarray) -> pa.Buffer:
    """The records' memory as an Arrow buffer (no copy when they are contiguous)."""
    return pa.py_buffer(np.ascontiguousarray(records).view(np.uint8))


def _well_formed(value: bytes) -> bool:
    h = HEADER_DTYPE.itemsize
    if len(value) < h:
        return False
    version, active_days = struct.unpack_from("<hh", value)  # the header's first two fields
    return version in (0, STATE_VERSION) and len(value) == h + active_days * DAY_DTYPE.itemsize  # 0: never seen


def decode_states(values: Sequence[bytes | None], strict: bool = True) -> np.ndarray:
    """Dense records for stored values; a missing value (never seen) decodes to ``empty_states``.

    A malformed value raises, or with ``strict=False`` decodes as never seen (Feast probes the
    on-demand view with made-up bytes when it applies the repo).
    """
    states = empty_states(len(values))
    present = {i: value for i, value in enumerate(values) if value is not None}
    good = [i for i, value in present.items() if _well_formed(value)]
    if strict and len(good) != len(present):
        bad = next(value for i, value in present.items() if i not in set(good))
        raise ValueError(f"a stored state ({len(bad)} bytes) is not a version {STATE_VERSION} activity state: "
                         "rebuild the features with `activity stream backfill`")
    if not good:
        return states
    h = HEADER_DTYPE.itemsize
    headers = np.frombuffer(b"".join(present[i][:h] for i in good), dtype=HEADER_DTYPE)
    target = np.asarray(good)
    for name in _SCALARS:
        states[name][target] = headers[name]
    days = np.frombuffer(b"".join(present[i][h:] for i in good), dtype=DAY_DTYPE)
    rows = np.repeat(target, headers["active_days"].astype(np.int64))
    slots = days["slot"].astype(np.int64)
    states["daily_counts"][rows, :, slots] = days["counts"]
    states["daily_spend"][rows, slots] = days["spend"]
    states["daily_max"][rows, slots] = days["max"]
    states["daily_merchant_bits"][rows, slots] = days["merchant_bits"]
    return states
