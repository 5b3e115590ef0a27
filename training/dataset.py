"""Point-in-time training sets from Feast, split by time with a horizon-long gap.

Labels come from the raw archive (every accepted event); features come from Feast's
point-in-time join through the feature service, so each row sees only what was known at its
``as_of``. ``training.pipeline`` fits the ensemble on the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.state import ENTITY_KEY, EVENT_TIMESTAMP
from features.store import historical_features
from features.transform import FEATURE_NAMES
from model_contract.labels import LabelPolicy, as_of_grid, label_activity_change


@dataclass(frozen=True)
class TimeSplit:
    train: np.ndarray  # as_of epoch days
    validation: np.ndarray
    test: np.ndarray
    # > 0: a long-horizon split: validation is this share of the customers, held out of training on
    # training's own dates (``held_out``), instead of later dates
    held_out_share: float = 0.0

    def rows(self, name: str, as_of: np.ndarray, customer_ids: np.ndarray) -> np.ndarray:
        """Which entity rows (their as_of days and customers) belong to split ``name``."""
        mask = np.isin(as_of, getattr(self, name))
        if self.held_out_share > 0 and name in ("train", "validation"):
            out = held_out(customer_ids, self.held_out_share)
            mask &= out if name == "validation" else ~out
        return mask


def held_out(customer_ids: np.ndarray, share: float) -> np.ndarray:
    """A stable ``share`` of the customers, chosen by a hash of their id (the same in every run)."""
    digest = pd.util.hash_array(np.asarray(customer_ids, dtype=object), categorize=False)
    return digest < np.uint64(min(max(share, 0.0), 1.0) * float(2**64 - 1))


def split_by_time(as_of_days: np.ndarray, horizon_days: int, shares: tuple[float, float] = (0.2, 0.2)) -> TimeSplit:
    """Latest days for test, the ones just before for validation, the rest (a horizon earlier) for training.

    A day is dropped from a split when its label window (``horizon_days`` after it) reaches the
    next split's first day, so no label overlaps the period a later split is evaluated on. The
    gap before test comes out of validation's share (which keeps at least one date), leaving the
    most rows for training: the members need them; the stacker and the decision rule need few.

    When the dates cannot hold three periods a horizon apart (a long horizon on a short history:
    182 days on 18 months), validation becomes ``shares[0]`` of the customers, held out on
    training's dates, and test starts at least a horizon after the first date: still a horizon
    after every training and validation date.
    """
    days = np.unique(as_of_days)
    n = len(days)
    test = days[max(0, n - max(1, int(round(n * shares[1])))):]
    if len(test) == 0:
        return TimeSplit(train=days[:0], validation=days[:0], test=days[:0])
    eligible = days[days + horizon_days <= test.min()]
    in_gap = int(np.sum((days < test.min()) & (days + horizon_days > test.min())))
    validation = eligible[max(0, len(eligible) - max(1, int(round(n * shares[0])) - in_gap)):]
    train = days[days + horizon_days <= validation.min()] if len(validation) else days[:0]
    if len(train) and len(validation):
        return TimeSplit(train=train, validation=validation, test=test)
    test = days[days >= max(int(test.min()), int(days.min()) + horizon_days)]
    train = days[days + horizon_days <= test.min()] if len(test) else days[:0]
    return TimeSplit(train=train, validation=train, test=test, held_out_share=shares[0])


def labelled_entities(daily: pd.DataFrame, policy: LabelPolicy, grid_days: int) -> pd.DataFrame:
    """Labels on the as_of grid that fits the data in ``daily`` (customer_id, day, count)."""
    grid = as_of_grid(int(daily["day"].min()), int(daily["day"].max()), policy, grid_days)
    return label_activity_change(daily, grid, policy)


def training_set(store, entities: pd.DataFrame) -> pd.DataFrame:  # feast.FeatureStore
    """Features at each row's as_of joined to its labels (rows are unique per customer and time)."""
    keys = entities[[ENTITY_KEY, EVENT_TIMESTAMP]]
    if keys.duplicated().any():
        raise ValueError("entity rows must be unique per (customer_id, event_timestamp): Feast merges duplicates")
    features = historical_features(store, keys)
    merged = entities.merge(features[[ENTITY_KEY, EVENT_TIMESTAMP, *FEATURE_NAMES]], on=[ENTITY_KEY, EVENT_TIMESTAMP],
                            how="left", validate="one_to_one")
    if len(merged) != len(entities) or merged[list(FEATURE_NAMES)].isna().any().any():
        raise RuntimeError("the feature store returned fewer rows than asked for")
    return merged
