"""Recency and frequency scores of a customer's features: a practitioner's first model and the last fallback.

The recency/frequency baseline fits a small classifier on them; the scorer, with no model at all,
turns them into probabilities by a fixed rule. Both read the same four numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def recency_frequency_scores(frame: pd.DataFrame) -> np.ndarray:
    """``(n, 4)``: recency, frequency, the last week's pace against the month and the month-on-month trend.

    All on log scales (counts and days act multiplicatively; the label is a ``log1p`` ratio). The
    frequency level is there because the label is noisy where counts are small: a rare customer's
    month-on-month swings are mostly Poisson noise, a daily customer's are not.
    """
    def log_count(name: str, scale: float = 1.0) -> np.ndarray:
        return np.log1p(frame[name].to_numpy(dtype=np.float64) * scale)

    recency = np.log1p(frame["days_since_last_tx"].to_numpy(dtype=np.float64))
    pace = log_count("tx_count_7d", 30.0 / 7.0) - log_count("tx_count_30d")
    return np.column_stack([recency, log_count("tx_count_30d"), pace, frame["trend_count_30d"].to_numpy(np.float64)])
