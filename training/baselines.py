"""Baselines scored on the same test rows as the model, so its gain is measured against something.

Each baseline exposes ``predict_proba(frame) -> (n, classes)`` and ``predict(frame) -> class index`` on
entity rows that carry the feature columns (``FEATURE_NAMES``) and the labels (``previous``,
``label_index``), and is fitted only on training/validation rows:

* ``PersistenceBaseline``: "nothing changes": always decides stable. Its probabilities are the
  training class prior (a constant: the best calibrated guess without looking at the customer,
  ROC-AUC exactly 0.5 by construction), so log-loss and ECE have a no-information reference too.
  For the ``active`` target "nothing changes" decides active exactly when the previous window was.
* ``RecencyFrequencyBaseline``: what a practitioner writes first: four hand-made scores
  (recency, 30-day frequency, the 7-day pace against the 30-day count, the 30-day trend) through
  a small multinomial logistic regression fitted on validation rows.
* ``BgNbdBaseline``: the classic buy-till-you-die model (BG/NBD, Fader, Hardie & Lee 2005)
  fitted by maximum likelihood (the paper's eq. 6, scipy). No maintained library is a light
  dependency here: ``lifetimes`` is unmaintained since 2020 and pymc-marketing brings ~285 MB
  (numba, llvmlite, pytensor compiling C); its MAP estimates land on the same parameters and
  expectations as this code (docs/training.md). It predicts the expected count of the next horizon from
  exact recency/frequency/age computed from the daily counts, and turns it into classes the same
  way as the oracle (Poisson counts around the expectation). For the ``active`` target it gives its
  own probability of any purchase in the horizon, ``P(alive) * (1 - ((alpha+T)/(alpha+T+t))^(r+x))``
  (a customer alive at ``as_of`` cannot drop out before a next purchase).

Decisions are ``argmax(p * w)`` with ``w`` tuned on validation for macro-F1, like the model's, so
F1 compares decision rules given equally good tuning, not tuning against none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, Self

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from features.state import ENTITY_KEY
from model_contract import bg_nbd, pareto_nbd
from model_contract.heuristic import recency_frequency_scores
from model_contract.labels import CLASSES, LabelPolicy
from training.oracle import as_of_days, poisson_class_probabilities

N_CLASSES = len(CLASSES)
STABLE = CLASSES.index("stable")
LABEL = "label_index"
RFM_COLUMNS = ("frequency", "recency", "T", "active_days", "count")


class Baseline(Protocol):
    name: ClassVar[str]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray: ...

    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...


def _tune(probabilities: np.ndarray, y: np.ndarray) -> np.ndarray:
    from training.model import tune_decision_weights  # xgboost and friends only when actually tuning

    return tune_decision_weights(probabilities, y)


@dataclass
class PersistenceBaseline:
    """Predicts "no change" for everyone; ``prior`` is the training class frequencies.

    ``predict`` is stable by definition (persistence), even if stable is not the prior's argmax:
    the decision is the rule being benchmarked, the probabilities its honest constant estimate.
    """

    prior: np.ndarray
    target: str = "change"
    name: ClassVar[str] = "persistence"

    @classmethod
    def fit(cls, train: pd.DataFrame, policy: LabelPolicy | None = None) -> PersistenceBaseline:
        policy = policy or LabelPolicy()
        counts = np.bincount(train[LABEL].to_numpy(dtype=np.int64), minlength=len(policy.classes))
        smoothed = counts.astype(np.float64) + 1.0  # a class absent from training keeps a finite log-loss
        return cls(prior=smoothed / smoothed.sum(), target=policy.target)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.tile(self.prior, (len(frame), 1))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.target == "active":
            return (frame["previous"].to_numpy(dtype=np.float64) > 0).astype(np.int64)
        return np.full(len(frame), STABLE, dtype=np.int64)


@dataclass
class RecencyFrequencyBaseline:
    """Multinomial logistic regression on ``recency_frequency_scores``, fitted on validation rows."""

    coef: np.ndarray  # (classes, scores)
    intercept: np.ndarray  # (classes,)
    decision_weights: np.ndarray
    name: ClassVar[str] = "recency_frequency"

    @classmethod
    def fit(cls, validation: pd.DataFrame, n_classes: int = N_CLASSES) -> RecencyFrequencyBaseline:
        from training.model import softmax_form

        y = validation[LABEL].to_numpy(dtype=np.int64)
        model = LogisticRegression(max_iter=1_000).fit(recency_frequency_scores(validation), y)
        coef, intercept = softmax_form(model, n_classes)  # a class absent from validation is never predicted
        fitted = cls(coef=coef, intercept=intercept, decision_weights=np.ones(n_classes))
        fitted.decision_weights = _tune(fitted.predict_proba(validation), y)
        return fitted

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        logits = recency_frequency_scores(frame) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.argmax(self.predict_proba(frame) * self.decision_weights, axis=1)


class DailyHistory:
    """Point-in-time recency/frequency/age per (customer, as_of) from ``daily`` (customer_id, day, count).

    Exact, unlike the features' approximations (``tenure_days`` is capped by the state's history,
    ``active_days_90d`` by its window): BG/NBD needs the whole purchase history before ``as_of``.
    Only days strictly before ``as_of`` are used, as in the label's ``previous`` window.
    """

    def __init__(self, daily: pd.DataFrame) -> None:
        active = daily[daily["count"] > 0]
        active = active.groupby([ENTITY_KEY, "day"], sort=True, as_index=False)["count"].sum()
        self.customers, code = np.unique(active[ENTITY_KEY].to_numpy(dtype=object), return_inverse=True)
        self.day = active["day"].to_numpy(dtype=np.int64)
        self.code = code.astype(np.int64)
        self._span = int(self.day.max() - self.day.min() + 2) if len(self.day) else 1
        self._origin = int(self.day.min()) if len(self.day) else 0
        self.key = self.code * self._span + (self.day - self._origin)  # sorted: by customer, then day
        self.first = np.searchsorted(self.code, np.arange(len(self.customers)))  # row of each first active day
        self.cum_count = np.cumsum(active["count"].to_numpy(dtype=np.float64))

    def rfm(self, customer_ids: np.ndarray, as_of: np.ndarray) -> pd.DataFrame:
        """``frequency`` (repeat active days), ``recency`` (last - first active day), ``T`` (as_of - first
        active day), ``active_days`` and ``count`` (transactions) before each row's ``as_of`` (epoch days)."""
        code = pd.Index(self.customers).get_indexer(np.asarray(customer_ids, dtype=object))
        as_of = np.asarray(as_of, dtype=np.int64)
        if len(self.day) == 0:  # no history at all: nobody has been seen
            return pd.DataFrame({name: np.zeros(len(code)) for name in RFM_COLUMNS})
        known = code >= 0
        cut = np.clip(as_of - self._origin, 0, self._span - 1)
        last = np.searchsorted(self.key, np.where(known, code, 0) * self._span + cut, side="left") - 1
        first = self.first[np.where(known, code, 0)]
        seen = known & (last >= first)  # an as_of before the customer's first day finds no day of theirs
        last, first = np.where(seen, last, 0), np.where(seen, first, 0)
        before_first = np.where(first > 0, self.cum_count[first - 1], 0.0)
        active_days = np.where(seen, last - first + 1, 0)
        return pd.DataFrame({  # in RFM_COLUMNS order
            "frequency": np.maximum(active_days - 1, 0).astype(np.float64),
            "recency": np.where(seen, self.day[last] - self.day[first], 0).astype(np.float64),
            "T": np.where(seen, as_of - self.day[first], 0).astype(np.float64),
            "active_days": active_days.astype(np.float64),
            "count": np.where(seen, self.cum_count[last] - before_first, 0.0),
        })


@dataclass
class BgNbdBaseline:
    """BG/NBD on active days, scaled to transactions by each customer's transactions per active day.

    BG/NBD counts at most one purchase per time unit in practice (repeat *days* here), while labels
    count transactions: heavy customers buy several times a day, hence the per-customer scale.
    Parameters are fitted on everyone's history before the first validation ``as_of``, so no label
    window of validation or test is seen; the decision weights are tuned on validation rows.
    """

    history: DailyHistory
    params: dict[str, float]
    policy: LabelPolicy = field(default_factory=LabelPolicy)
    decision_weights: np.ndarray = field(default_factory=lambda: np.ones(N_CLASSES))
    name: ClassVar[str] = "bg_nbd"
    estimate: ClassVar[Callable[[pd.DataFrame], dict[str, float]]] = staticmethod(bg_nbd.fit_params)
    expected_purchases: ClassVar[Callable[..., np.ndarray]] = staticmethod(bg_nbd.expected_purchases)
    p_active: ClassVar[Callable[..., np.ndarray]] = staticmethod(bg_nbd.p_active)

    @classmethod
    def fit(cls, daily: pd.DataFrame, validation: pd.DataFrame, policy: LabelPolicy, fit_customers: int = 20_000,
            seed: int = 0, fit_params: Callable[[pd.DataFrame], dict[str, float]] | None = None
            ) -> Self:
        """``fit_customers`` caps the fit (four population parameters need no more); ``fit_params`` is the
        estimator (the model's maximum likelihood by default)."""
        fit_params = fit_params or cls.estimate
        history = DailyHistory(daily)
        cutoff = int(as_of_days(validation).min())
        rfm = history.rfm(history.customers, np.full(len(history.customers), cutoff))
        rfm = rfm[rfm["active_days"] > 0]
        if len(rfm) > fit_customers:
            rfm = rfm.sample(n=fit_customers, random_state=seed)
        fitted = cls(history=history, params=fit_params(rfm), policy=policy)
        fitted.decision_weights = _tune(fitted.predict_proba(validation), validation[LABEL].to_numpy(dtype=np.int64))
        return fitted

    def _rfm(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.history.rfm(frame[ENTITY_KEY].to_numpy(dtype=object), as_of_days(frame))

    def expected_next(self, frame: pd.DataFrame) -> np.ndarray:
        """Expected transactions in each row's next ``horizon_days`` from its history before ``as_of``."""
        rfm = self._rfm(frame)
        days = self.expected_purchases(self.params, rfm["frequency"], rfm["recency"], rfm["T"],
                                       float(self.policy.horizon_days))
        per_day = np.divide(rfm["count"], rfm["active_days"], out=np.ones(len(rfm)), where=rfm["active_days"] > 0)
        return days * per_day

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.policy.target == "active":
            rfm = self._rfm(frame)
            active = self.p_active(self.params, rfm["frequency"], rfm["recency"], rfm["T"],
                                   float(self.policy.horizon_days))
            return np.column_stack([1.0 - active, active])
        return poisson_class_probabilities(self.expected_next(frame), frame["previous"].to_numpy(dtype=np.float64),
                                           self.policy)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.argmax(self.predict_proba(frame) * self.decision_weights, axis=1)


class ParetoNbdBaseline(BgNbdBaseline):
    """Pareto/NBD (``model_contract.pareto_nbd``) in BG/NBD's place: the same daily history, scaling and decisions.

    Its customers can drop out at any moment rather than only right after a purchase, so a long
    silence after a single purchase reads differently from BG/NBD's.
    """

    name: ClassVar[str] = "pareto_nbd"
    estimate: ClassVar[Callable[[pd.DataFrame], dict[str, float]]] = staticmethod(pareto_nbd.fit_params)
    expected_purchases: ClassVar[Callable[..., np.ndarray]] = staticmethod(pareto_nbd.expected_purchases)
    p_active: ClassVar[Callable[..., np.ndarray]] = staticmethod(pareto_nbd.p_active)


CLASSIC_MODELS: tuple[type[BgNbdBaseline], ...] = (BgNbdBaseline, ParetoNbdBaseline)


@dataclass(frozen=True)
class FittedBaselines:
    fitted: dict[str, Baseline]
    skipped: dict[str, str]  # name -> why it did not run


def fit_baselines(train: pd.DataFrame, validation: pd.DataFrame, daily: pd.DataFrame, policy: LabelPolicy,
                  classic: bool = True) -> FittedBaselines:
    """Every baseline (``classic=False`` leaves out BG/NBD and Pareto/NBD); a failing fit is reported as
    skipped with the reason.

    A comparison that cannot be fitted on some data must not stop training.
    """
    fitted: dict[str, Baseline] = {
        PersistenceBaseline.name: PersistenceBaseline.fit(train, policy),
        RecencyFrequencyBaseline.name: RecencyFrequencyBaseline.fit(validation, len(policy.classes)),
    }
    skipped: dict[str, str] = {}
    for model in CLASSIC_MODELS:
        if not classic:
            skipped[model.name] = "disabled by the caller"
            continue
        try:
            fitted[model.name] = model.fit(daily, validation, policy)
        except Exception as error:  # see the docstring
            skipped[model.name] = f"the {model.name} fit failed ({type(error).__name__}: {error})"
    return FittedBaselines(fitted=fitted, skipped=skipped)
