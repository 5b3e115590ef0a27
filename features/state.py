"""The stored per-customer activity state: day-indexed history, packed into one binary value.

A state holds the customer's last ``HISTORY_DAYS`` daily aggregates ending on ``end_day`` (the
day of their latest transaction), so windows can be computed relative to any request time and
decay when the customer goes silent. It is stored in Feast as a single ``Bytes`` feature: a
fixed-layout record (``STATE_DTYPE``) that a batch of rows decodes in one ``np.frombuffer``
call, which keeps Feast's point-in-time join fast (array-typed features are not). The streaming
job and the backfill encode states; ``features.transform`` is the only reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

STATE_VERSION: Final = 1
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


def encode_states(states: np.ndarray) -> list[bytes]:
    """One bytes value per record."""
    raw = np.ascontiguousarray(states, dtype=STATE_DTYPE).tobytes()
    size = STATE_DTYPE.itemsize
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def decode_states(values: Sequence[bytes | None], strict: bool = True) -> np.ndarray:
    """Records for stored values; a missing value (never seen) decodes to ``empty_states``.

    A value of the wrong size raises, or with ``strict=False`` decodes as never seen (Feast
    probes the on-demand view with made-up bytes when it applies the repo).
    """
    size = STATE_DTYPE.itemsize
    wrong = next((value for value in values if value is not None and len(value) != size), None)
    if wrong is not None and strict:
        raise ValueError(f"a stored state has {len(wrong)} bytes, expected {size} (state version "
                         f"{STATE_VERSION}): rebuild the features with `activity stream backfill`")
    states = empty_states(len(values))
    present = [i for i, value in enumerate(values) if value is not None and len(value) == size]
    if present:
        states[present] = np.frombuffer(b"".join(values[i] for i in present), dtype=STATE_DTYPE)
    return states
