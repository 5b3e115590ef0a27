"""The training reference's statistics: what a drift check compares the current features with.

Per feature: its moments and quantiles, and the PSI bins (edges at the reference's deciles, so
PSI compares like with like, and the reference's shares in them). The trainer writes them with
every model; the drift job reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from features.transform import FEATURE_NAMES

PSI_BINS = 10


def bin_edges(values: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Interior quantile edges (duplicates removed, so a mostly-constant feature gets fewer bins)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.array([])
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the right-closed bins ``(edge[k-1], edge[k]]`` (so a mass of zeros has its own bin)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(1, counts.sum())


def reference_statistics(frame: pd.DataFrame, labels: pd.Series | None = None) -> dict[str, Any]:
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
    if labels is not None:
        stats["labels"] = {str(k): float(v) for k, v in labels.value_counts(normalize=True).items()}
    return stats


def psi(reference_shares: np.ndarray, current_shares: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index between two binnings over the same edges."""
    ref = np.clip(np.asarray(reference_shares, dtype=float), floor, None)
    cur = np.clip(np.asarray(current_shares, dtype=float), floor, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def mean_importances(per_member: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The members' feature importances, each normalized to sum 1, averaged per feature (logged for drift)."""
    normalized = []
    for values in per_member.values():
        total = sum(values.values())
        normalized.append({name: value / total if total > 0 else 0.0 for name, value in values.items()})
    names = sorted({name for values in normalized for name in values})
    return {name: sum(values.get(name, 0.0) for values in normalized) / len(normalized) for name in names}
