"""Labels: will a customer grow, hold or cut back their activity over the next horizon, or buy at all?

Two targets share the rows. ``change`` (the default): for a customer at ``as_of``, the change is
``log1p(next) - log1p(previous)`` where ``next`` and ``previous`` count the transactions in the
``horizon`` days after and before ``as_of``; ``decline`` at or below ``decline_below``, ``growth``
at or above ``growth_above``, else ``stable``. ``active``: the classic "will this customer buy
again": ``active`` when ``next > 0``, else ``inactive``. Class 0 is the one at risk either way
(decline, inactive). Everything here is pure: daily counts in, labelled entity rows out.

``as_of`` is carried in one form, epoch days (UTC), in the rows' ``as_of_day`` column, from the
grid through the split, the baselines and the oracle. ``event_timestamp`` (00:00 UTC of that day)
is there for Feast's point-in-time join, the one edge that needs a time; ``epoch_days`` is the
other edge, where a time from outside (a logged prediction) becomes an as_of day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TARGETS = ("change", "active")
TARGET_CLASSES = {"change": ("decline", "stable", "growth"), "active": ("inactive", "active")}
CLASSES = TARGET_CLASSES["change"]  # what the scorer serves
SECONDS_PER_DAY = 86_400
AS_OF_DAY = "as_of_day"


@dataclass(frozen=True)
class LabelPolicy:
    horizon_days: int = 30
    decline_below: float = -0.3
    growth_above: float = 0.3
    target: str = "change"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target {self.target!r}: one of {', '.join(TARGETS)}")

    @property
    def classes(self) -> tuple[str, ...]:
        return TARGET_CLASSES[self.target]

    def classify(self, change: np.ndarray) -> np.ndarray:
        """Class index (into ``TARGET_CLASSES["change"]``) per change."""
        return np.where(change <= self.decline_below, 0, np.where(change >= self.growth_above, 2, 1))

    def label(self, previous: np.ndarray, upcoming: np.ndarray) -> np.ndarray:
        """Class index (into ``self.classes``) per row from its ``previous`` and ``next`` counts."""
        if self.target == "active":
            return (np.asarray(upcoming) > 0).astype(np.int64)
        return self.classify(np.log1p(upcoming) - np.log1p(previous))


def as_of_days(frame: pd.DataFrame) -> np.ndarray:
    """The rows' as_of day: the ``as_of_day`` column that ``label_activity_change`` gives every labelled row."""
    return frame[AS_OF_DAY].to_numpy(dtype=np.int64)


def epoch_days(stamps: pd.Series) -> np.ndarray:
    """Epoch day (UTC) of each timestamp (any datetime resolution).

    Floors like ``features.transform`` does, so a mid-day request belongs to its calendar day.
    """
    stamps = pd.to_datetime(stamps, utc=True)
    return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)


def as_of_grid(first_day: int, last_day: int, policy: LabelPolicy, grid_days: int) -> np.ndarray:
    """Epoch days usable as ``as_of``: a full horizon of history before and of outcome after.

    ``last_day`` is the last day with complete data; an as_of day ``d`` stands for 00:00 UTC of
    ``d``, so its "next" window is days ``d .. d + horizon - 1``.
    """
    start = first_day + policy.horizon_days
    end = last_day - policy.horizon_days + 1
    return np.arange(start, end + 1, grid_days, dtype=np.int64)


def label_activity_change(daily: pd.DataFrame, as_of_days: np.ndarray, policy: LabelPolicy) -> pd.DataFrame:
    """Entity rows with labels for every customer seen before each as_of day.

    ``daily`` has ``customer_id, day, count`` (one row per active customer-day). Returns
    ``customer_id, as_of_day, event_timestamp (its 00:00 UTC), previous, next, change, label, label_index``.
    """
    horizon = policy.horizon_days
    customers, customer_index = np.unique(daily["customer_id"].to_numpy(dtype=object), return_inverse=True)
    day = daily["day"].to_numpy(dtype=np.int64)
    counts = daily["count"].to_numpy(dtype=np.float64)
    if len(day) == 0 or len(as_of_days) == 0:
        return _empty()
    origin = int(min(day.min(), as_of_days.min() - horizon))
    span = int(max(day.max(), as_of_days.max() + horizon)) - origin + 1
    # cumulative counts per customer: cum[c, k] = transactions before day origin + k
    matrix = np.zeros((len(customers), span + 1))
    np.add.at(matrix, (customer_index, day - origin + 1), counts)
    cumulative = np.cumsum(matrix, axis=1)
    first_seen = np.full(len(customers), np.iinfo(np.int64).max)
    np.minimum.at(first_seen, customer_index, day)
    frames = []
    for as_of in as_of_days.tolist():
        k = as_of - origin
        seen = first_seen < as_of
        previous = cumulative[seen, k] - cumulative[seen, k - horizon]
        upcoming = cumulative[seen, k + horizon] - cumulative[seen, k]
        change = np.log1p(upcoming) - np.log1p(previous)
        index = policy.label(previous, upcoming)
        frames.append(pd.DataFrame({
            "customer_id": customers[seen],
            AS_OF_DAY: np.int64(as_of),
            "event_timestamp": pd.Timestamp(as_of * SECONDS_PER_DAY, unit="s", tz="UTC").as_unit("ns"),
            "previous": previous, "next": upcoming, "change": change,
            "label": np.asarray(policy.classes, dtype=object)[index], "label_index": index,
        }))
    return pd.concat(frames, ignore_index=True) if frames else _empty()


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.Series(dtype=object), AS_OF_DAY: pd.Series(dtype=np.int64),
                         "event_timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
                         "previous": [], "next": [], "change": [], "label": pd.Series(dtype=object),
                         "label_index": pd.Series(dtype=np.int64)})
