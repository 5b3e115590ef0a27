"""The simulator's oracle as a classifier: the best any model can do on simulated data.

The simulator draws each customer's transactions of a day as ``Poisson(rate(c, d))`` with a
deterministic rate (segment, weekday, payday, trajectory), independently across days. So, given
the population, the count in a label's "next" window is exactly ``Poisson(sum of the window's
rates)`` whatever happened before, and ``P(class | next ~ Poisson(mu), previous)`` is the true
conditional class distribution of a row: no model fed only observable history can beat it in
expectation. Benchmarks report it as the ceiling next to the model and the baselines.

``poisson_class_probabilities`` is shared with the baselines that predict an expected count (BG/NBD),
so they are turned into classes the same way as the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy.special import pdtr, pdtrc

from features.state import ENTITY_KEY
from model_contract.labels import LabelPolicy, as_of_days
from streaming.simulator import Population, expected_activity

EPOCH = date(1970, 1, 1)
_MAX_ADJUST = 3  # float rounding moves a count threshold by at most one; a few steps are plenty


def _first_count_where(holds: Callable[[np.ndarray], np.ndarray], guess: np.ndarray) -> np.ndarray:
    """Smallest integer ``n >= 0`` near ``guess`` where ``holds(n)``, for ``holds`` false then true as ``n`` grows.

    The guess comes from the closed form; the steps pin the boundary with the label's own float
    arithmetic, so the probabilities put each count in exactly the class ``LabelPolicy.classify`` gives it.
    """
    n = np.maximum(guess, 0.0)
    for _ in range(_MAX_ADJUST):
        n = np.where((n > 0) & holds(np.maximum(n - 1, 0.0)), n - 1, n)
        n = np.where(holds(n), n, n + 1)
    return n


def count_thresholds(previous: np.ndarray, policy: LabelPolicy) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the largest ``next`` count labelled decline (-1 if none) and the smallest labelled growth.

    ``change = log1p(next) - log1p(previous)`` increases with ``next``, so each class is a range of counts.
    """
    previous = np.asarray(previous, dtype=np.float64)
    base = np.log1p(previous)

    def label(n: np.ndarray) -> np.ndarray:
        return policy.classify(np.log1p(n) - base)

    first_not_decline = _first_count_where(lambda n: label(n) != 0, np.floor(np.expm1(base + policy.decline_below)) + 1)
    first_growth = _first_count_where(lambda n: label(n) == 2, np.ceil(np.expm1(base + policy.growth_above)))
    return first_not_decline - 1, first_growth


def poisson_class_probabilities(expected_next: np.ndarray, previous: np.ndarray, policy: LabelPolicy) -> np.ndarray:
    """``(n, 3)`` probabilities of decline/stable/growth when ``next ~ Poisson(expected_next)``.

    For the ``active`` target, ``(n, 2)``: inactive (``next == 0``) and active.
    """
    mu = np.maximum(np.asarray(expected_next, dtype=np.float64), 0.0)
    if policy.target == "active":
        return np.column_stack([np.exp(-mu), -np.expm1(-mu)])
    decline_max, growth_min = count_thresholds(previous, policy)
    p_decline = np.where(decline_max >= 0, pdtr(np.maximum(decline_max, 0), mu), 0.0)
    p_growth = np.where(growth_min >= 1, pdtrc(np.maximum(growth_min - 1, 0), mu), 1.0)
    p_stable = np.clip(1.0 - p_decline - p_growth, 0.0, 1.0)
    probabilities = np.column_stack([p_decline, p_stable, p_growth])
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def expected_next(population: Population, frame: pd.DataFrame, policy: LabelPolicy) -> np.ndarray:
    """The oracle's expected count in each row's "next" window, epoch days ``as_of .. as_of + horizon - 1``.

    The simulator's day ``i`` is the UTC calendar date ``population.start + i``, so an epoch day maps to
    the date ``1970-01-01 + day`` and ``expected_activity(as_of, as_of + horizon)`` covers exactly the
    label's window (``[start, end)``, end exclusive).
    """
    position = pd.Index(population.customer_ids).get_indexer(frame[ENTITY_KEY].to_numpy(dtype=object))
    if (position < 0).any():
        unknown = frame[ENTITY_KEY].to_numpy(dtype=object)[position < 0][:5].tolist()
        raise ValueError(f"customers not in the population (e.g. {unknown}): the oracle only knows simulated ones")
    days = as_of_days(frame)
    expected = np.empty(len(frame))
    for day in np.unique(days).tolist():
        start = EPOCH + timedelta(days=day)
        window = expected_activity(population, start, start + timedelta(days=policy.horizon_days))
        rows = days == day
        expected[rows] = window["expected_count"].to_numpy()[position[rows]]
    return expected


@dataclass
class OracleClassifier:
    """Class probabilities from the true future rates; ``predict`` is ``argmax(p * decision_weights)``.

    With unit weights the decision maximises accuracy; ``tuned`` sets the weights on validation rows
    for macro-F1, the same treatment the model gets, so the ceiling on F1 is comparable too.
    """

    population: Population
    policy: LabelPolicy = field(default_factory=LabelPolicy)
    decision_weights: np.ndarray | None = None  # None: unit weights

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """``frame`` needs ``customer_id``, ``event_timestamp`` and ``previous`` (as from ``label_activity_change``)."""
        expected = expected_next(self.population, frame, self.policy)
        return poisson_class_probabilities(expected, frame["previous"].to_numpy(dtype=np.float64), self.policy)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        probabilities = self.predict_proba(frame)
        weights = np.ones(probabilities.shape[1]) if self.decision_weights is None else self.decision_weights
        return np.argmax(probabilities * weights, axis=1)

    def tuned(self, validation: pd.DataFrame) -> OracleClassifier:
        """A copy whose decision weights maximise macro-F1 on ``validation`` (needs ``label_index``)."""
        from training.model import tune_decision_weights  # heavy imports (xgboost) only when tuning

        weights = tune_decision_weights(self.predict_proba(validation), validation["label_index"].to_numpy())
        return OracleClassifier(self.population, self.policy, weights)
