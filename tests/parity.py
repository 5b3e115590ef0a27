"""The parity checks the integration tests share: online against point-in-time features, and an answer
against the champion's own prediction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.transform import FEATURE_NAMES

COUNT_FEATURES = [name for name in FEATURE_NAMES if name.startswith(("tx_count", "active_days"))]


def assert_features_equal(merged: pd.DataFrame) -> None:
    """``<feature>_on`` equals ``<feature>_off`` for every feature: counts exactly, the rest to 1e-9 relative."""
    for name in FEATURE_NAMES:
        on, off = merged[f"{name}_on"].to_numpy(), merged[f"{name}_off"].to_numpy()
        if name in COUNT_FEATURES:
            assert np.array_equal(on, off), name
        else:
            np.testing.assert_allclose(on, off, rtol=1e-9, atol=0, err_msg=name)


def assert_champion_answer(answer: Any, version: str, expected: np.ndarray) -> dict[str, Any]:
    """A 200 from the champion arm, not degraded, on known features, with the expected probabilities."""
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"]["version"] == version and body["model"]["arm"] == "champion"
    assert not body["degraded"] and body["features"]["known"]
    probabilities = [body["probabilities"][name] for name in ("decline", "stable", "growth")]
    np.testing.assert_allclose(probabilities, expected, atol=2e-5)
    return body
