"""`activity backtest --target active`: the count figures (Spearman and MAE against the actual counts)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from training.backtest import count_metrics


def test_counts_are_ranked_and_matched_against_the_actual_purchases() -> None:
    test = pd.DataFrame({"next": [0, 1, 2, 5]})
    figures = count_metrics(
        test,
        scores={"exact": np.array([0.1, 0.5, 0.6, 0.9]), "reversed": np.array([0.9, 0.6, 0.5, 0.1]),
                "probability_only": np.array([0.2, 0.3, 0.4, 0.8]), "flat": np.full(4, 0.5)},
        counts={"exact": np.array([0.0, 1.0, 2.0, 5.0]), "reversed": np.array([5.0, 2.0, 1.0, 0.0])},
    )
    assert figures["exact"] == {"count_spearman": pytest.approx(1.0), "count_mae": 0.0}
    assert figures["reversed"]["count_spearman"] == pytest.approx(-1.0)
    assert figures["reversed"]["count_mae"] == pytest.approx((5 + 1 + 1 + 5) / 4)
    # a model without counts is ranked by its probability of activity and has no MAE
    assert figures["probability_only"]["count_spearman"] == pytest.approx(1.0)
    assert math.isnan(figures["probability_only"]["count_mae"])
    assert math.isnan(figures["flat"]["count_spearman"])  # a constant ranks nothing
