"""Evaluation plots as matplotlib Figures, for the run's artifacts and the model card.

Figures are built as ``matplotlib.figure.Figure`` on the Agg canvas, never through
``pyplot``: no display is touched, no global backend is switched under other code in the
process (the trainer may run inside a server), and no figure is kept alive by pyplot's
registry, so a dropped figure is freed like any object. ``save_all`` still releases each
figure's contents once written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from features.transform import FEATURE_NAMES
from model_contract.evaluate import CALIBRATION_BINS, calibration_bins
from model_contract.labels import CLASSES

DPI = 110


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def roc_curves(y: np.ndarray, probabilities: np.ndarray, classes: Sequence[str] = CLASSES) -> Figure:
    """One-vs-rest ROC per class; a class without positives or negatives is listed as undefined."""
    y, probabilities = np.asarray(y), np.asarray(probabilities, dtype=np.float64)
    figure = _figure(5.5, 5)
    axes = figure.add_subplot()
    for k, name in enumerate(classes):
        positive = y == k
        if positive.any() and not positive.all():
            fpr, tpr, _ = roc_curve(positive, probabilities[:, k])
            axes.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        else:
            axes.plot([], [], label=f"{name} (undefined: one-sided labels)")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one vs rest",
             xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right")
    return figure


def pr_curves(y: np.ndarray, probabilities: np.ndarray, classes: Sequence[str] = CLASSES) -> Figure:
    """One-vs-rest precision-recall per class, with each class's prevalence (a random ranker) dotted."""
    y, probabilities = np.asarray(y), np.asarray(probabilities, dtype=np.float64)
    figure = _figure(5.5, 5)
    axes = figure.add_subplot()
    for k, name in enumerate(classes):
        positive = y == k
        if not positive.any():
            axes.plot([], [], label=f"{name} (undefined: absent)")
            continue
        precision, recall, _ = precision_recall_curve(positive, probabilities[:, k])
        label = f"{name} (AP {average_precision_score(positive, probabilities[:, k]):.3f}, base {positive.mean():.2f})"
        (line,) = axes.step(recall, precision, where="post", label=label)
        axes.axhline(positive.mean(), linestyle=":", color=line.get_color())
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall, one vs rest", xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower left")
    return figure


def confusion_matrix_plot(y: np.ndarray, predicted: np.ndarray, classes: Sequence[str] = CLASSES) -> Figure:
    """Counts and row-normalised shares (recall on the diagonal) side by side; rows = true class."""
    n_classes = len(classes)
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (np.asarray(y, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure = _figure(10, 4.5)
    for axes, values, title, fmt in zip(figure.subplots(1, 2), (counts, shares), ("counts", "share of true class"),
                                        ("{:.0f}", "{:.2f}"), strict=True):
        image = axes.imshow(values, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axes, shrink=0.8)
        top = values.max() or 1.0
        for (i, j), value in np.ndenumerate(values):
            axes.text(j, i, fmt.format(value), ha="center", va="center",
                      color="white" if value > top / 2 else "black")
        axes.set(xticks=range(n_classes), yticks=range(n_classes), xticklabels=classes, yticklabels=classes,
                 xlabel="predicted", ylabel="true", title=title)
    return figure


def calibration_plot(y: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS,
                     classes: Sequence[str] = CLASSES) -> Figure:
    """Reliability diagram per class (P(class) vs observed frequency), on the ECE's own bins.

    Marker area follows the bin's row count, since a far-off point from a near-empty bin
    matters much less to the ECE than a small gap in a full one.
    """
    y, probabilities = np.asarray(y), np.asarray(probabilities, dtype=np.float64)
    figure = _figure(5.5 * len(classes), 5)
    for k, axes in enumerate(figure.subplots(1, len(classes), sharey=True)):
        counts, confidence, observed = calibration_bins(probabilities[:, k], (y == k).astype(np.float64), bins)
        filled = counts > 0
        axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
        axes.plot(confidence[filled], observed[filled], color="tab:blue")
        sizes = 300 * counts[filled] / max(counts.sum(), 1.0) + 10
        axes.scatter(confidence[filled], observed[filled], s=sizes, color="tab:blue", alpha=0.6)
        axes.set(xlabel=f"predicted P({classes[k]})", title=classes[k], xlim=(0, 1), ylim=(0, 1))
    figure.axes[0].set_ylabel("observed frequency")
    figure.suptitle("Reliability (marker area = rows in bin)")
    return figure


def feature_importance_plot(names: Sequence[str], importances: Mapping[str, np.ndarray], top: int = 20) -> Figure:
    """Each model's importances normalised to sum 1, side by side, for the ``top`` features by their mean.

    Normalising puts RF impurity decrease and XGB gain (different units) on one axis; only the
    ranking and relative weight within a model are comparable, not the raw numbers.
    """
    normalised = {model: _normalise(np.asarray(values, dtype=np.float64)) for model, values in importances.items()}
    for model, values in normalised.items():
        if len(values) != len(names):
            raise ValueError(f"{model}: {len(values)} importances for {len(names)} feature names")
    mean = np.mean(list(normalised.values()), axis=0) if normalised else np.zeros(len(names))
    order = np.argsort(-mean, kind="stable")[:top][::-1]  # barh draws bottom-up: the largest ends on top
    figure = _figure(8, max(3.0, 0.32 * len(order) + 1.2))
    axes = figure.add_subplot()
    height = 0.8 / max(len(normalised), 1)
    positions = np.arange(len(order))
    for i, (model, values) in enumerate(normalised.items()):
        axes.barh(positions + ((len(normalised) - 1) / 2 - i) * height, values[order], height=height, label=model)
    axes.set(yticks=positions, yticklabels=[names[j] for j in order], xlabel="share of the model's total importance",
             title=f"Feature importance (top {len(order)}, normalised per model)")
    if normalised:
        axes.legend(loc="lower right")
    return figure


def save_all(y: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray, importances: Mapping[str, np.ndarray],
             directory: Path, *, feature_names: Sequence[str] = FEATURE_NAMES,
             classes: Sequence[str] = CLASSES) -> list[Path]:
    """Write every plot as a PNG into ``directory`` (created if missing) and return the paths.

    The importance plot is skipped when ``importances`` is empty (e.g. a baseline without one).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    builders = {
        "roc_curves": lambda: roc_curves(y, probabilities, classes),
        "pr_curves": lambda: pr_curves(y, probabilities, classes),
        "confusion_matrix": lambda: confusion_matrix_plot(y, predicted, classes),
        "calibration": lambda: calibration_plot(y, probabilities, classes=classes),
    }
    if importances:
        builders["feature_importance"] = lambda: feature_importance_plot(feature_names, importances)
    paths = []
    for name, build in builders.items():
        figure = build()
        path = directory / f"{name}.png"
        figure.savefig(path)
        figure.clear()  # free the artists now rather than whenever the figure is collected
        paths.append(path)
    return paths


def _normalise(values: np.ndarray) -> np.ndarray:
    total = np.sum(np.abs(values))
    return np.abs(values) / total if total > 0 else np.zeros_like(values)
