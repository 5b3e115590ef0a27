"""Test-window metrics for the activity models: pure arrays in, a flat record of floats out.

Every model and baseline is scored by the same ``evaluate`` on the same rows, so the comparison
table is apples to apples. Nothing here talks to MLflow: ``Metrics.as_dict`` is already shaped
for ``mlflow.log_metrics`` (flat, float values, names in ``[A-Za-z0-9_]``).

A metric that is undefined on the given rows (a class absent from the labels, no rows at all)
is NaN, never an exception: a short or skewed test window must still produce a report. Macro
averages run over all the target's classes and are NaN when any class's value is NaN, so a macro over
two classes is never silently compared with one over three. ``classes`` is the target's class
names (``model_contract.labels.TARGET_CLASSES``), the change target's by default; class 0 is the one
at risk (decline, inactive), whose top-decile lift is ``decline_lift_top_decile``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from model_contract.labels import CLASSES

N_CLASSES = len(CLASSES)
AT_RISK = 0  # decline (change target), inactive (active target)
CALIBRATION_BINS = 15
LOG_LOSS_FLOOR = 1e-15  # probabilities are clipped here so a confident miss costs ~34.5 nats, not infinity
TOP_FRACTION = 0.1  # the "top decile" of the decline lift
HEADLINE = ("roc_auc", "macro_f1", "pr_auc", "log_loss", "ece", "decline_lift_top_decile")
LOWER_IS_BETTER = frozenset({"log_loss", "ece"})
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Metrics:
    """One model's scores on one set of rows; per-class values are keyed by class name."""

    rows: int
    accuracy: float
    macro_f1: float
    roc_auc: float
    pr_auc: float
    log_loss: float
    ece: float
    classwise_ece: float
    decline_lift_top_decile: float
    precision: Mapping[str, float]
    recall: Mapping[str, float]
    f1: Mapping[str, float]
    roc_auc_per_class: Mapping[str, float]
    pr_auc_per_class: Mapping[str, float]
    ece_per_class: Mapping[str, float]
    share: Mapping[str, float]

    def as_dict(self) -> dict[str, float]:
        """Flat ``name -> float`` for ``mlflow.log_metrics``; per-class names end in the class name."""
        flat: dict[str, float] = {
            "rows": float(self.rows), "accuracy": self.accuracy, "macro_f1": self.macro_f1,
            "roc_auc": self.roc_auc, "pr_auc": self.pr_auc, "log_loss": self.log_loss, "ece": self.ece,
            "classwise_ece": self.classwise_ece, "decline_lift_top_decile": self.decline_lift_top_decile,
        }
        per_class = {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                     "roc_auc": self.roc_auc_per_class, "pr_auc": self.pr_auc_per_class,
                     "ece": self.ece_per_class, "share": self.share}
        for prefix, values in per_class.items():
            flat |= {f"{prefix}_{name}": float(value) for name, value in values.items()}
        bad = [name for name in flat if not _METRIC_NAME.match(name)]
        if bad:  # a class renamed with a space or a dash would otherwise only fail at logging time
            raise ValueError(f"metric names must match [A-Za-z0-9_]+: {bad}")
        return {name: float(value) for name, value in flat.items()}


def evaluate(y: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray,
             classes: Sequence[str] = CLASSES) -> Metrics:
    """Score one model: ``y`` and ``predicted`` are class indices, ``probabilities`` is ``(n, len(classes))``.

    ``predicted`` is passed separately because the models decide with tuned class weights
    (``argmax(p * w)``), not the plain argmax: the label metrics score the actual decisions,
    the probability metrics score the probabilities.
    """
    n_classes = len(classes)
    y, probabilities, predicted = _check(y, probabilities, predicted, n_classes)
    n = len(y)
    precision, recall, f1 = _precision_recall_f1(y, predicted, n_classes)
    roc = [roc_auc(y == k, probabilities[:, k]) for k in range(n_classes)]
    pr = [average_precision(y == k, probabilities[:, k]) for k in range(n_classes)]
    per_class_ece = [calibration_error(probabilities[:, k], (y == k).astype(float)) for k in range(n_classes)]
    share = [float(np.mean(y == k)) if n else math.nan for k in range(n_classes)]

    def by_class(values: list[float]) -> dict[str, float]:
        return dict(zip(classes, (float(v) for v in values), strict=True))

    return Metrics(
        rows=n,
        accuracy=float(np.mean(y == predicted)) if n else math.nan,
        macro_f1=_macro(f1), roc_auc=_macro(roc), pr_auc=_macro(pr),
        log_loss=log_loss(y, probabilities),
        ece=top_label_ece(y, probabilities),
        classwise_ece=_macro(per_class_ece),
        decline_lift_top_decile=top_fraction_lift(y == AT_RISK, probabilities[:, AT_RISK]),
        precision=by_class(precision), recall=by_class(recall), f1=by_class(f1),
        roc_auc_per_class=by_class(roc), pr_auc_per_class=by_class(pr),
        ece_per_class=by_class(per_class_ece), share=by_class(share),
    )


def log_loss(y: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-probability of the true class, with probabilities clipped at ``LOG_LOSS_FLOOR``.

    Computed directly rather than with sklearn's ``log_loss`` so a class missing from ``y`` (or
    a row that does not sum to exactly one) neither raises nor gets silently renormalised.
    """
    if len(y) == 0:
        return math.nan
    true_class = probabilities[np.arange(len(y)), y]
    return float(-np.mean(np.log(np.clip(true_class, LOG_LOSS_FLOOR, 1.0))))


def calibration_bins(confidence: np.ndarray, outcome: np.ndarray, bins: int = CALIBRATION_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins on [0, 1]: per bin the row count, mean confidence and mean outcome (NaN if empty).

    Bin ``b`` holds ``b/bins <= confidence < (b+1)/bins``; a confidence of exactly 1 goes to the last bin.
    Shared by the ECE and the reliability diagram so the plot shows what the number measures.
    """
    index = np.clip((np.asarray(confidence, dtype=np.float64) * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        mean_outcome = np.bincount(index, weights=outcome, minlength=bins) / counts
    return counts, mean_confidence, mean_outcome


def calibration_error(confidence: np.ndarray, outcome: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: ``sum_b n_b / n * |mean outcome_b - mean confidence_b|``."""
    if len(confidence) == 0:
        return math.nan
    counts, mean_confidence, mean_outcome = calibration_bins(confidence, outcome, bins)
    filled = counts > 0
    gaps = np.abs(mean_outcome[filled] - mean_confidence[filled])
    return float(np.sum(counts[filled] * gaps) / len(confidence))


def top_label_ece(y: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE of the top label: confidence ``max p`` against whether ``argmax p`` is the true class.

    Uses the probabilities' own argmax (not the tuned decision) because it measures whether the
    probabilities mean what they say, which is what downstream consumers of ``p`` rely on.
    """
    if len(y) == 0:
        return math.nan
    correct = (np.argmax(probabilities, axis=1) == y).astype(np.float64)
    return calibration_error(probabilities.max(axis=1), correct, bins)


def top_fraction_lift(positive: np.ndarray, score: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Positive rate among the ``ceil(fraction * n)`` highest-scored rows over the overall positive rate.

    Rows tied at the cut-off share the remaining slots in proportion, so the lift does not depend
    on row order: a constant score (a prior baseline) gets exactly 1. NaN when there are no
    rows or no positives (the ratio is undefined).
    """
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n = len(positive)
    if n == 0 or not positive.any():
        return math.nan
    k = max(1, math.ceil(round(fraction * n, 9)))  # round: a float product like 3.0000000001 must not give 4
    threshold = np.sort(score)[::-1][k - 1]
    above, tied = score > threshold, score == threshold
    hits = positive[above].sum() + (k - above.sum()) * positive[tied].mean()
    return float((hits / k) / positive.mean())


def comparison_table(results: Mapping[str, Metrics]) -> pd.DataFrame:
    """Rows = model names (in the given order), columns = ``HEADLINE`` metrics."""
    return pd.DataFrame([[getattr(m, c) for c in HEADLINE] for m in results.values()],
                        index=pd.Index(list(results), name="model"), columns=list(HEADLINE), dtype=np.float64)


def markdown_table(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-markdown table of ``table`` (index as first column), NaN shown as ``n/a``.

    Hand-rolled so the model card does not depend on ``tabulate`` (an optional pandas extra).
    """
    def cell(value: object) -> str:
        if isinstance(value, float | np.floating):
            return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    header = [str(table.index.name or ""), *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * len(table.columns)]) + "|"]
    for name, row in table.iterrows():
        lines.append("| " + " | ".join([str(name), *(cell(v) for v in row.tolist())]) + " |")
    return "\n".join(lines)


def comparison_markdown(results: Mapping[str, Metrics], digits: int = 4) -> str:
    """``comparison_table`` rendered as markdown: the table the model card and run notes show."""
    return markdown_table(comparison_table(results), digits)


def _check(y: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray,
           n_classes: int = N_CLASSES) -> tuple[np.ndarray, ...]:
    """Shapes and ranges are programming errors (unlike a missing class), so they do raise."""
    y = np.asarray(y).astype(np.int64).ravel()
    predicted = np.asarray(predicted).astype(np.int64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(y) == 0:  # an empty list or a (0,) array both mean "no rows"
        probabilities = probabilities.reshape(0, n_classes)
    if probabilities.shape != (len(y), n_classes) or predicted.shape != y.shape:
        raise ValueError(f"expected y ({len(y)},), probabilities ({len(y)}, {n_classes}), predicted ({len(y)},); "
                         f"got probabilities {probabilities.shape}, predicted {predicted.shape}")
    for name, labels in (("y", y), ("predicted", predicted)):
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{name} must hold class indices 0..{n_classes - 1}")
    return y, probabilities, predicted


def _precision_recall_f1(y: np.ndarray, predicted: np.ndarray, n_classes: int = N_CLASSES
                         ) -> tuple[list[float], list[float], list[float]]:
    """Per class, NaN where the denominator is zero (never predicted / never present / neither)."""
    precision, recall, f1 = [], [], []
    for k in range(n_classes):
        tp = float(np.sum((predicted == k) & (y == k)))
        predicted_k, actual_k = float(np.sum(predicted == k)), float(np.sum(y == k))
        precision.append(tp / predicted_k if predicted_k else math.nan)
        recall.append(tp / actual_k if actual_k else math.nan)
        f1.append(2 * tp / (predicted_k + actual_k) if predicted_k + actual_k else math.nan)
    return precision, recall, f1


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """One class against the rest by the rank-sum (Mann-Whitney) form, ties at half: sklearn's ``roc_auc_score``.

    NaN unless both positives and negatives exist. Written on numpy so the model contract, which
    monitoring shares, needs no scikit-learn.
    """
    positive = np.asarray(positive, dtype=bool)
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    if n_positive == 0 or n_negative == 0:
        return math.nan
    _, inverse, counts = np.unique(np.asarray(score, dtype=np.float64), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(average_rank[inverse][positive].sum())
    return (rank_sum - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative)


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Precision at each distinct score threshold weighted by the recall it adds: sklearn's definition.

    Needs positives (NaN without); with no negatives it is trivially 1.
    """
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        return math.nan
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    ordered_score, ordered_positive = np.asarray(score, dtype=np.float64)[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ordered_score)), len(ordered_score) - 1]
    true_positives = np.cumsum(ordered_positive)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _macro(values: list[float]) -> float:
    return math.nan if any(math.isnan(v) for v in values) else float(np.mean(values))

