"""What the trainer reads besides Feast: daily transaction counts per customer, and how to cap them.

The counts come from the raw archive (``streaming.archive.daily_counts``); labels count every
accepted event, not the features being predicted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from activity_settings import ActivityError
from features.state import ENTITY_KEY


class NoTrainingData(ActivityError):
    """There is too little to train on; the message says what is missing."""


def sample_customers(daily: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """Keep a uniform share of customers (all their days), for a capped training set."""
    customers = daily[ENTITY_KEY].unique()
    rng = np.random.default_rng(seed)
    kept = rng.choice(customers, size=max(1, int(round(len(customers) * share))), replace=False)
    return daily[daily[ENTITY_KEY].isin(kept)].reset_index(drop=True)
