"""THE feature transform: a customer's stored activity state + a request time -> model features.

Training (through Feast's point-in-time join), serving (through the online store) and every
test call this one function, via the on-demand feature view in ``features.repo``. Windows are
day slots ``as_of_day - W < day <= as_of_day``, so counts decay when a customer goes silent.
A customer with no state (never seen) gets the cold-start values in ``COLD_START``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from features.state import (
    CHANNELS,
    DAILY_COUNTS,
    HISTORY_DAYS,
    MERCHANT_SKETCH_BITS,
    STATE_FEATURE,
    decode_states,
)

AS_OF: Final = "as_of_s"  # request field: the prediction time, epoch seconds (UTC)
SECONDS_PER_DAY: Final = 86_400
MAX_DAYS_SINCE: Final = 365.0  # days_since_last_tx is capped here; never seen = the cap

WINDOWS: Final = (7, 30, 90)
FEATURE_NAMES: Final = (
    *(f"tx_count_{w}d" for w in WINDOWS),
    *(f"spend_{w}d" for w in WINDOWS),
    "days_since_last_tx",
    "trend_count_7d",
    "trend_count_30d",
    "trend_spend_30d",
    "mean_ticket_90d",
    "max_ticket_90d",
    "distinct_merchants_90d",
    "distinct_categories_90d",
    *(f"share_{channel}_90d" for channel in CHANNELS),
    "weekend_share_90d",
    "night_share_90d",
    "active_days_30d",
    "active_days_90d",
    "tenure_days",
)
COLD_START: Final = {name: 0.0 for name in FEATURE_NAMES} | {"days_since_last_tx": MAX_DAYS_SINCE}


def _linear_count(bits_set: np.ndarray) -> np.ndarray:
    """Distinct items behind a hashed bitmap (linear counting); exact while collisions are rare."""
    m = float(MERCHANT_SKETCH_BITS)
    empty = np.maximum(m - bits_set, 0.5)  # a full bitmap estimates as if half a slot were empty
    return m * np.log(m / empty)


def _log_ratio(recent: np.ndarray, before: np.ndarray) -> np.ndarray:
    return np.log1p(recent) - np.log1p(before)


def _share(part: np.ndarray, total: np.ndarray) -> np.ndarray:
    return np.divide(part, total, out=np.zeros_like(part, dtype=np.float64), where=total > 0)


def window_features(states: np.ndarray, as_of_s: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """Model features for each state record (``STATE_DTYPE``) at its request time (epoch seconds).

    Returns ``FEATURE_NAMES`` -> float64 arrays. A record with ``version == 0`` is a customer
    never seen and gets exactly ``COLD_START``.
    """
    rows = len(states)
    as_of = np.asarray(as_of_s, dtype=np.float64).reshape(rows)
    as_of_day = np.floor(as_of / SECONDS_PER_DAY).astype(np.int64)
    seen = states["version"] > 0
    end_day = np.where(seen, states["end_day"], as_of_day).astype(np.int64)
    # slot_day[r, i]: the calendar day (epoch days) that slot i of row r stands for
    slot_day = end_day[:, None] - (HISTORY_DAYS - 1) + np.arange(HISTORY_DAYS)[None, :]
    age = as_of_day[:, None] - slot_day  # 0 = the request's own day

    def window(width: int, offset: int = 0) -> np.ndarray:
        return (age >= offset) & (age < offset + width)

    daily = states["daily_counts"].astype(np.float64)
    count, night = daily[:, DAILY_COUNTS.index("count")], daily[:, DAILY_COUNTS.index("night")]
    spend, biggest = states["daily_spend"], states["daily_max"]
    w30, w90 = window(30), window(90)
    count_in = {w: (count * window(w)).sum(axis=1) for w in WINDOWS}
    spend_in = {w: (spend * window(w)).sum(axis=1) for w in WINDOWS}

    features: dict[str, np.ndarray] = {}
    for w in WINDOWS:
        features[f"tx_count_{w}d"] = count_in[w]
        features[f"spend_{w}d"] = spend_in[w]
    since = np.clip((as_of - states["last_event_s"]) / SECONDS_PER_DAY, 0.0, MAX_DAYS_SINCE)
    features["days_since_last_tx"] = np.where(seen & np.isfinite(since), since, MAX_DAYS_SINCE)
    features["trend_count_7d"] = _log_ratio(count_in[7], (count * window(7, 7)).sum(axis=1))
    features["trend_count_30d"] = _log_ratio(count_in[30], (count * window(30, 30)).sum(axis=1))
    features["trend_spend_30d"] = _log_ratio(spend_in[30], (spend * window(30, 30)).sum(axis=1))
    features["mean_ticket_90d"] = _share(spend_in[90], count_in[90])
    features["max_ticket_90d"] = np.where(w90, biggest, 0.0).max(axis=1)
    merchant_bits = np.bitwise_or.reduce(np.where(w90, states["daily_merchant_bits"], 0), axis=1)
    features["distinct_merchants_90d"] = _linear_count(np.bitwise_count(merchant_bits.view(np.uint64)))
    category_age = as_of_day[:, None] - states["category_last_day"]
    features["distinct_categories_90d"] = ((category_age >= 0) & (category_age < 90)).sum(axis=1)
    for channel in CHANNELS:
        in_channel = daily[:, DAILY_COUNTS.index(channel)]
        features[f"share_{channel}_90d"] = _share((in_channel * w90).sum(axis=1), count_in[90])
    weekend = ((slot_day + 3) % 7) >= 5  # epoch day 0 was a Thursday
    features["weekend_share_90d"] = _share((count * (w90 & weekend)).sum(axis=1), count_in[90])
    features["night_share_90d"] = _share((night * w90).sum(axis=1), count_in[90])
    features["active_days_30d"] = ((count > 0) & w30).sum(axis=1)
    features["active_days_90d"] = ((count > 0) & w90).sum(axis=1)
    features["tenure_days"] = np.where(seen, np.clip(as_of_day - states["first_day"], 0, None), 0)
    return {name: np.asarray(features[name], dtype=np.float64) for name in FEATURE_NAMES}


def features_frame(state_values: Sequence[bytes | None], as_of_s: Sequence[float] | np.ndarray) -> pd.DataFrame:
    """Stored state values (Feast's ``activity_state``) + request times -> the feature frame."""
    return pd.DataFrame(window_features(decode_states(state_values), as_of_s))


def feast_transform(inputs: dict[str, Any]) -> dict[str, list[float]]:
    """The on-demand feature view's body: Feast's column dict in, feature columns out."""
    features = window_features(decode_states(inputs[STATE_FEATURE], strict=False), inputs[AS_OF])
    return {name: values.tolist() for name, values in features.items()}
