"""THE feature transform: a customer's stored activity state + a request time -> model features.

Training (through Feast's point-in-time join), serving (through the online store) and every
test call this one function, via the on-demand feature view in ``features.repo``. Windows are
day slots ``as_of_day - W < day <= as_of_day``, so counts decay when a customer goes silent.
A customer with no state (never seen) gets the cold-start values in ``COLD_START``.

All window sums of a row are one matrix product: its per-day quantities (``_QUANTITIES`` x
slots) times a 0/1 slots x windows matrix saying which slots each window (``_SPANS``, plus the
weekend days of the 90-day window) covers. That matrix depends only on how many days the request
lies after the state's ``end_day`` and on that day's weekday, so all of them are built once, at
import (``_WINDOW_WEIGHTS``). Rows go through in blocks of ``_BLOCK``, each block about 40 NumPy
operations whatever its size: a one-row call (serving) stays cheap and a large batch's
intermediates stay in cache.
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
    "lifetime_tx_count",
    "lifetime_tx_per_30d",
    "purchase_span_days",
    "mean_days_between_tx",
    "recency_over_mean_gap",
    "lifetime_spend",
    "lifetime_mean_ticket",
    "refund_share",
)
COLD_START: Final = {name: 0.0 for name in FEATURE_NAMES} | {"days_since_last_tx": MAX_DAYS_SINCE}

# The day windows summed over, as (first age, width) in days; age 0 is the request's own day.
# "weekend_90d" (appended to these) is the Saturdays and Sundays of the 90-day window.
_SPANS: Final = {"7d": (0, 7), "30d": (0, 30), "90d": (0, 90), "prev_7d": (7, 7), "prev_30d": (30, 30)}
_WINDOW_NAMES: Final = (*_SPANS, "weekend_90d")
# The per-day quantities summed: the daily counts, the spend and an "active that day" 0/1.
_QUANTITIES: Final = (*DAILY_COUNTS, "spend", "active")
_BLOCK: Final = 256  # rows per block: a block's intermediates (~12 kB a row) stay in cache


def _window_weights() -> np.ndarray:
    """0/1 float64 ``[end_day % 7, lag + HISTORY_DAYS, slot, window]``: whether the slot is in the window.

    ``lag`` is ``as_of_day - end_day``; past ``±HISTORY_DAYS`` no slot is in any window, so lags
    are clamped to that range.
    """
    lag = np.arange(-HISTORY_DAYS, HISTORY_DAYS + 1)[None, :, None]
    slot = np.arange(HISTORY_DAYS)[None, None, :]
    end_weekday = np.arange(7)[:, None, None]
    age = lag + HISTORY_DAYS - 1 - slot
    windows = [(age >= first) & (age < first + width) for first, width in _SPANS.values()]
    weekend = (end_weekday - (HISTORY_DAYS - 1) + slot + 3) % 7 >= 5  # epoch day 0 was a Thursday
    windows.append(windows[_WINDOW_NAMES.index("90d")] & weekend)
    return np.stack(np.broadcast_arrays(*windows), axis=-1).astype(np.float64)


_WINDOW_WEIGHTS: Final = _window_weights()
_IN_90D: Final = _WINDOW_WEIGHTS[0, :, :, _WINDOW_NAMES.index("90d")] > 0  # [lag + HISTORY_DAYS, slot], any weekday


def _sum_at(quantity: str, window: str) -> int:
    """Column of ``quantity`` summed over ``window`` in a block's flattened (quantity, window) sums."""
    return _QUANTITIES.index(quantity) * len(_WINDOW_NAMES) + _WINDOW_NAMES.index(window)


def _positions(names: Sequence[str]) -> np.ndarray:
    return np.array([FEATURE_NAMES.index(name) for name in names])


# Features that are window sums, shares of the 90-day count, and log ratios of consecutive windows.
_SUMS: Final = {
    **{f"tx_count_{w}d": _sum_at("count", f"{w}d") for w in WINDOWS},
    **{f"spend_{w}d": _sum_at("spend", f"{w}d") for w in WINDOWS},
    "active_days_30d": _sum_at("active", "30d"),
    "active_days_90d": _sum_at("active", "90d"),
}
_SHARES: Final = {
    "mean_ticket_90d": _sum_at("spend", "90d"),
    **{f"share_{channel}_90d": _sum_at(channel, "90d") for channel in CHANNELS},
    "weekend_share_90d": _sum_at("count", "weekend_90d"),
    "night_share_90d": _sum_at("night", "90d"),
}
_TRENDS: Final = {  # log1p(recent) - log1p(before)
    "trend_count_7d": (_sum_at("count", "7d"), _sum_at("count", "prev_7d")),
    "trend_count_30d": (_sum_at("count", "30d"), _sum_at("count", "prev_30d")),
    "trend_spend_30d": (_sum_at("spend", "30d"), _sum_at("spend", "prev_30d")),
}
_SUM_ROWS, _SUM_COLUMNS = _positions(list(_SUMS)), np.array(list(_SUMS.values()))
_SHARE_ROWS, _SHARE_COLUMNS = _positions(list(_SHARES)), np.array(list(_SHARES.values()))
_TREND_ROWS, _TREND_COLUMNS = _positions(list(_TRENDS)), np.array(list(_TRENDS.values())).T  # [recent|before, trend]
_COUNT_90D: Final = _sum_at("count", "90d")
_DAYS_SINCE, _MAX_TICKET, _MERCHANTS, _CATEGORIES, _TENURE = (FEATURE_NAMES.index(name) for name in (
    "days_since_last_tx", "max_ticket_90d", "distinct_merchants_90d", "distinct_categories_90d", "tenure_days"))
_LIFETIME_COUNT, _LIFETIME_RATE, _SPAN, _MEAN_GAP, _RECENCY_RATIO = (FEATURE_NAMES.index(name) for name in (
    "lifetime_tx_count", "lifetime_tx_per_30d", "purchase_span_days", "mean_days_between_tx",
    "recency_over_mean_gap"))
_LIFETIME_SPEND, _LIFETIME_TICKET, _REFUND_SHARE = (FEATURE_NAMES.index(name) for name in (
    "lifetime_spend", "lifetime_mean_ticket", "refund_share"))


def _linear_count(bits_set: np.ndarray) -> np.ndarray:
    """Distinct items behind a hashed bitmap (linear counting); exact while collisions are rare."""
    m = float(MERCHANT_SKETCH_BITS)
    empty = np.maximum(m - bits_set, 0.5)  # a full bitmap estimates as if half a slot were empty
    return m * np.log(m / empty)


_DISTINCT_ESTIMATE: Final = _linear_count(np.arange(MERCHANT_SKETCH_BITS + 1))  # by number of bits set


def _share(part: np.ndarray, total: np.ndarray) -> np.ndarray:
    return np.divide(part, total, out=np.zeros(part.shape), where=total > 0)


def window_features(states: np.ndarray, as_of_s: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """Model features for each state record (``STATE_DTYPE``) at its request time (epoch seconds).

    Returns ``FEATURE_NAMES`` -> float64 arrays (rows of one features x rows array). A record
    with ``version == 0`` is a customer never seen and gets exactly ``COLD_START``.
    """
    rows = len(states)
    as_of = np.asarray(as_of_s, dtype=np.float64).reshape(rows)
    out = np.empty((len(FEATURE_NAMES), rows))
    for start in range(0, rows, _BLOCK):
        block = slice(start, start + _BLOCK)
        _block_features(states[block], as_of[block], out[:, block])
    return dict(zip(FEATURE_NAMES, out, strict=True))


def _block_features(states: np.ndarray, as_of: np.ndarray, out: np.ndarray) -> None:
    """``window_features`` of a block of rows, written to ``out`` (features x rows)."""
    as_of_day = np.floor(as_of / SECONDS_PER_DAY).astype(np.int64)
    seen = states["version"] > 0
    end_day = np.where(seen, states["end_day"], as_of_day)
    lag = np.minimum(np.maximum(as_of_day - end_day, -HISTORY_DAYS), HISTORY_DAYS) + HISTORY_DAYS  # clamped, >= 0
    weights = _WINDOW_WEIGHTS[end_day % 7, lag]  # (rows, slots, windows)
    daily = states["daily_counts"]
    per_day = np.concatenate([daily, states["daily_spend"][:, None], daily[:, :1] > 0], axis=1, dtype=np.float64)
    sums = (per_day @ weights).reshape(len(states), -1)  # sums[:, _sum_at(quantity, window)]
    out[_SUM_ROWS] = sums[:, _SUM_COLUMNS].T
    out[_SHARE_ROWS] = _share(sums[:, _SHARE_COLUMNS], sums[:, _COUNT_90D, None]).T
    logs = np.log1p(sums[:, _TREND_COLUMNS])
    out[_TREND_ROWS] = (logs[:, 0] - logs[:, 1]).T

    in_90d = _IN_90D[lag]
    out[_MAX_TICKET] = np.where(in_90d, states["daily_max"], 0.0).max(axis=1)
    merchant_bits = np.bitwise_or.reduce(np.where(in_90d, states["daily_merchant_bits"], 0), axis=1)
    out[_MERCHANTS] = _DISTINCT_ESTIMATE[np.bitwise_count(merchant_bits.view(np.uint64))]
    category_age = as_of_day[:, None] - states["category_last_day"]
    out[_CATEGORIES] = (category_age.view(np.uint64) < 90).sum(axis=1)  # 0 <= age < 90: negative ages wrap
    since = np.maximum((as_of - states["last_event_s"]) / SECONDS_PER_DAY, 0.0)
    out[_DAYS_SINCE] = np.where(seen, np.fmin(since, MAX_DAYS_SINCE), MAX_DAYS_SINCE)  # fmin: no event (NaN) -> cap
    tenure = np.where(seen, np.maximum(as_of_day - states["first_day"], 0), 0)
    out[_TENURE] = tenure
    count = np.where(seen, states["total_count"], 0).astype(np.float64)
    out[_LIFETIME_COUNT] = count
    out[_LIFETIME_RATE] = count * 30.0 / np.maximum(tenure, 1)
    span = np.where(seen, np.maximum(end_day - states["first_day"], 0), 0).astype(np.float64)
    out[_SPAN] = span
    mean_gap = np.where(count > 1, span / np.maximum(count - 1, 1), 0.0)
    out[_MEAN_GAP] = mean_gap
    out[_RECENCY_RATIO] = np.where(mean_gap > 0, out[_DAYS_SINCE] / np.maximum(mean_gap, 1e-9), 0.0)
    spend = np.where(seen, states["total_spend"], 0.0)
    out[_LIFETIME_SPEND] = spend
    out[_LIFETIME_TICKET] = _share(spend, count)
    refunds = np.where(seen, states["refund_count"], 0).astype(np.float64)
    out[_REFUND_SHARE] = _share(refunds, refunds + count)  # of all transactions, refunds and reversals


def features_frame(state_values: Sequence[bytes | None], as_of_s: Sequence[float] | np.ndarray) -> pd.DataFrame:
    """Stored state values (Feast's ``activity_state``) + request times -> the feature frame."""
    return pd.DataFrame(window_features(decode_states(state_values), as_of_s))


def feast_transform(inputs: dict[str, Any]) -> dict[str, list[float]]:
    """The on-demand feature view's body: Feast's column dict in, feature columns out."""
    features = window_features(decode_states(inputs[STATE_FEATURE], strict=False), inputs[AS_OF])
    return {name: values.tolist() for name, values in features.items()}
