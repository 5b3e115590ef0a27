"""Quality before the labels arrive: confidence-based performance estimation (CBPE).

A calibrated model states, with each answer, how likely every class is. If those probabilities
hold (calibration) and what links features to outcomes has not changed (no concept shift), the
outcomes of the answers given today are draws from them; so the quality the answers *will* have
once their horizon has passed can be computed now, without a single label:

- the expected confusion matrix: ``E[C][k, j] = sum of p_k over the rows decided j`` (rows: the
  realized class, columns: the decided one), hence the expected precision, recall and F1 of
  each class and the macro-F1 (ratios of expectations, as NannyML's CBPE does);
- the expected one-vs-rest ROC-AUC of each class: the probability-weighted share of
  (positive, negative) pairs the score orders correctly, ties counted half, a row never paired
  with itself; the macro ROC-AUC is their mean;
- the expected class shares: the mean probability of each class.

The band around each figure is where the realized figure falls with 95 % probability if the
probabilities are right: outcomes are drawn from them ``draws`` times and scored exactly like
``model_contract.evaluate`` scores real ones. A shift of the population toward customers the model is
unsure about lowers the estimate at once; a shift the model does not care about leaves it.

Everything here is pure: probabilities and decisions in, an ``Estimate`` out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from activity_settings import ActivityError
from model_contract.labels import CLASSES
from monitoring.alerts import Alert

ALERT_NAME = "ActivityEstimatedQualityDrop"
TOLERANCE = 1e-12  # a drop of exactly the margin does not alert
N_CLASSES = len(CLASSES)
BAND = (2.5, 97.5)  # percentiles of the simulated realized figures
DRAWS = 200


class EstimateError(ActivityError, ValueError):
    """Probabilities and decisions that cannot be estimated from; the message names the problem."""


@dataclass(frozen=True)
class Band:
    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Estimate:
    """What one group of answers is expected to score once its outcomes are known."""

    rows: int
    confusion: np.ndarray  # (classes, classes): realized x decided, expected counts
    roc_auc: float
    roc_auc_band: Band
    macro_f1: float
    macro_f1_band: Band
    roc_auc_per_class: dict[str, float]
    f1_per_class: dict[str, float]
    share: dict[str, float]  # expected share of each realized class
    decided_share: dict[str, float]  # share of each decided class

    def values(self) -> dict[str, float]:
        """Flat figures, named like ``monitoring.quality``'s (``roc_auc``, ``macro_f1``, ``share_growth``…)."""
        flat = {"roc_auc": self.roc_auc, "roc_auc_low": self.roc_auc_band.low, "roc_auc_high": self.roc_auc_band.high,
                "macro_f1": self.macro_f1, "macro_f1_low": self.macro_f1_band.low,
                "macro_f1_high": self.macro_f1_band.high, "accuracy": float(np.trace(self.confusion) / self.rows)}
        for prefix, per_class in (("roc_auc", self.roc_auc_per_class), ("f1", self.f1_per_class),
                                  ("share", self.share), ("decided_share", self.decided_share)):
            flat |= {f"{prefix}_{name}": float(value) for name, value in per_class.items()}
        return flat


def check_inputs(probabilities: np.ndarray, decided: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n, classes)`` probabilities summing to one per row and ``n`` class indices, as float64 and int64."""
    p = np.asarray(probabilities, dtype=np.float64)
    d = np.asarray(decided)
    if p.ndim != 2 or p.shape[1] != N_CLASSES:
        raise EstimateError(f"probabilities must be (rows, {N_CLASSES}) over {', '.join(CLASSES)}; got {p.shape}")
    if d.shape != (len(p),):
        raise EstimateError(f"one decision per row needed: {len(p)} rows of probabilities, decisions {d.shape}")
    if len(p) == 0:
        raise EstimateError("no answers to estimate from")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise EstimateError("probabilities must be finite, non-negative and sum to 1 per row (the champion's "
                            "calibrated output, not scores)")
    d = d.astype(np.int64)
    if (d < 0).any() or (d >= N_CLASSES).any():
        raise EstimateError(f"decisions must be class indices 0..{N_CLASSES - 1}")
    return p, d


def expected_confusion(probabilities: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """``E[C][k, j]``: the expected number of rows of realized class ``k`` among those decided ``j``."""
    one_hot = np.eye(N_CLASSES)[decided]
    return probabilities.T @ one_hot


def f1_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class F1 of a (possibly expected) confusion matrix; NaN where precision or recall is undefined."""
    tp = np.diag(confusion)
    decided, realized = confusion.sum(axis=0), confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(decided > 0, tp / decided, np.nan)
        recall = np.where(realized > 0, tp / realized, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)


def expected_roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Expected one-vs-rest ROC-AUC of ``score`` when row ``i`` is positive with probability ``positive[i]``."""
    order = np.argsort(score, kind="stable")
    s, p = score[order], positive[order]
    q = 1.0 - p
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    tie_group = np.repeat(np.arange(len(first)), counts)
    q_below = np.concatenate([[0.0], np.cumsum(q)])[first][tie_group]  # negative mass at strictly lower scores
    q_tied = np.add.reduceat(q, first)[tie_group] - q  # negative mass at equal scores, the row itself left out
    numerator = float(np.sum(p * (q_below + 0.5 * q_tied)))
    denominator = float(p.sum() * q.sum() - np.sum(p * q))
    return numerator / denominator if denominator > 0 else math.nan


def simulated_outcomes(probabilities: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """``(draws, n)`` class indices drawn row by row from ``probabilities``."""
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative[:, -1] = 1.0
    uniform = rng.random((draws, len(probabilities)))
    return (uniform[:, :, None] > cumulative[None, :, :]).sum(axis=2)


def _drawn_figures(probabilities: np.ndarray, decided: np.ndarray, outcomes: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Macro ROC-AUC and macro-F1 of each simulated outcome vector (rows of ``outcomes``)."""
    draws, n = outcomes.shape
    auc = np.zeros((draws, N_CLASSES))
    for k in range(N_CLASSES):
        ranks = rankdata(probabilities[:, k])  # ties averaged, as roc_auc_score treats them
        positive = outcomes == k
        n_pos = positive.sum(axis=1).astype(np.float64)
        n_neg = n - n_pos
        rank_sum = positive.astype(np.float64) @ ranks
        with np.errstate(invalid="ignore", divide="ignore"):
            auc[:, k] = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    cells = np.zeros((draws, N_CLASSES * N_CLASSES))
    codes = outcomes * N_CLASSES + decided[None, :]
    for row in range(draws):
        cells[row] = np.bincount(codes[row], minlength=N_CLASSES * N_CLASSES)
    f1 = np.array([f1_from_confusion(c.reshape(N_CLASSES, N_CLASSES)) for c in cells])
    return auc.mean(axis=1), f1.mean(axis=1)


def _band(values: np.ndarray) -> Band:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return Band(math.nan, math.nan)
    low, high = np.percentile(finite, BAND)
    return Band(float(low), float(high))


def estimate(probabilities: np.ndarray, decided: np.ndarray, draws: int = DRAWS, seed: int = 0) -> Estimate:
    """The CBPE estimate of one group of answers (see the module's docstring)."""
    p, d = check_inputs(probabilities, decided)
    confusion = expected_confusion(p, d)
    f1 = f1_from_confusion(confusion)
    auc = np.array([expected_roc_auc(p[:, k], p[:, k]) for k in range(N_CLASSES)])
    drawn_auc, drawn_f1 = _drawn_figures(p, d, simulated_outcomes(p, draws, seed)) if draws else (
        np.array([math.nan]), np.array([math.nan]))
    return Estimate(
        rows=len(p), confusion=confusion,
        roc_auc=float(np.mean(auc)), roc_auc_band=_band(drawn_auc),
        macro_f1=float(np.mean(f1)), macro_f1_band=_band(drawn_f1),
        roc_auc_per_class=dict(zip(CLASSES, auc.tolist(), strict=True)),
        f1_per_class=dict(zip(CLASSES, f1.tolist(), strict=True)),
        share=dict(zip(CLASSES, p.mean(axis=0).tolist(), strict=True)),
        decided_share=dict(zip(CLASSES, (np.bincount(d, minlength=N_CLASSES) / len(d)).tolist(), strict=True)),
    )


def estimate_alert(estimated: Estimate, version: str, arm: str, test_roc_auc: float | None, max_drop: float,
                   detail: str = "") -> Alert | None:
    """``ActivityEstimatedQualityDrop`` when the estimated ROC-AUC is more than ``max_drop`` below the test figure."""
    if test_roc_auc is None or not (math.isfinite(test_roc_auc) and math.isfinite(estimated.roc_auc)):
        return None
    drop = test_roc_auc - estimated.roc_auc
    if drop <= max_drop + TOLERANCE:
        return None
    band = estimated.roc_auc_band
    return Alert(
        name=ALERT_NAME,
        summary=f"model v{version} ({arm}): estimated ROC-AUC {estimated.roc_auc:.3f} is {drop:.3f} below its test "
                f"ROC-AUC {test_roc_auc:.3f}",
        description=f"Confidence-based estimate over {estimated.rows:,} answers not yet labelled: ROC-AUC "
                    f"{estimated.roc_auc:.4f} (95 % band {band.low:.4f}..{band.high:.4f}), macro-F1 "
                    f"{estimated.macro_f1:.4f}; the version's test window gave ROC-AUC {test_roc_auc:.4f} "
                    f"(monitoring.estimate_alert_auc_drop = {max_drop:g}). {detail}".strip(),
        labels={"model_version": version, "arm": arm})
