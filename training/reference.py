"""The training reference for drift checks: a sample of the training features and their statistics.

Logged with every model; the drift job compares the features of scored customers against it.
The histogram edges are the reference's deciles, so PSI compares like with like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.transform import FEATURE_NAMES

PSI_BINS = 10


def reference_sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """A uniform sample of the training rows' features (and their labels)."""
    columns = [*FEATURE_NAMES, "label"]
    sample = frame if len(frame) <= rows else frame.sample(rows, random_state=seed)
    return sample[columns].reset_index(drop=True)


def bin_edges(values: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Interior quantile edges (duplicates removed, so a mostly-constant feature gets fewer bins)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.array([])
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(1, counts.sum())


def reference_statistics(frame: pd.DataFrame) -> dict[str, Any]:
    """Per feature: mean, std, quantiles, and the PSI bins (edges and shares); plus the label shares."""
    stats: dict[str, Any] = {"rows": len(frame), "features": {}}
    for name in FEATURE_NAMES:
        values = frame[name].to_numpy(dtype=np.float64)
        edges = bin_edges(values)
        stats["features"][name] = {
            "mean": float(np.mean(values)), "std": float(np.std(values)),
            "min": float(np.min(values)), "max": float(np.max(values)),
            "quantiles": {str(q): float(np.quantile(values, q)) for q in (0.01, 0.25, 0.5, 0.75, 0.99)},
            "psi_edges": edges.tolist(), "psi_shares": bin_shares(values, edges).tolist(),
        }
    if "label" in frame:
        stats["labels"] = {str(k): float(v) for k, v in frame["label"].value_counts(normalize=True).items()}
    return stats


def psi(reference_shares: np.ndarray, current_shares: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index between two binnings over the same edges."""
    ref = np.clip(np.asarray(reference_shares, dtype=float), floor, None)
    cur = np.clip(np.asarray(current_shares, dtype=float), floor, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))
