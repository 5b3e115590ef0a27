"""The scorer's second answer: will the customer transact at all over the next horizon, and how often.

A buy-till-you-die model (BG/NBD or Pareto/NBD, whichever the trainer found better on validation
rows) with its four population parameters, evaluated on three of the customer's features:

* ``frequency`` x: repeat transactions, ``lifetime_tx_count - 1``;
* ``recency`` t_x: ``purchase_span_days`` (last - first transaction day);
* age ``T``: ``tenure_days`` (as_of - first transaction day).

The trainer fits it on the features of the training rows (``training.forecast``) and registers it
with the version as ``artifacts/activity_forecast.json``; the scorer computes the same features from
the online store, so the forecast has no training-serving skew either. It answers "P(at least one
transaction in the next ``horizon_days``)" and "expected transactions in the next ``horizon_days``"
for every customer with a purchase on record (a customer never seen has no history to read: null).
Closed forms only: the scorer never fits.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from features.transform import FEATURE_NAMES
from model_contract import bg_nbd, pareto_nbd

MODELS: dict[str, ModuleType] = {"bg_nbd": bg_nbd, "pareto_nbd": pareto_nbd}
_COUNT, _SPAN, _TENURE = (FEATURE_NAMES.index(name) for name in ("lifetime_tx_count", "purchase_span_days",
                                                                  "tenure_days"))


class ForecastError(ValueError):
    """A forecast file that cannot be used (unknown model, missing or invalid parameters)."""


def summaries(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(frequency, recency, T, seen)`` from rows of ``FEATURE_NAMES``; ``seen``: a purchase on record."""
    x = np.asarray(features, dtype=np.float64)
    count = x[:, _COUNT]
    seen = count > 0
    frequency = np.where(seen, np.maximum(count - 1.0, 0.0), 0.0)
    recency = np.where(seen, np.maximum(x[:, _SPAN], 0.0), 0.0)
    age = np.where(seen, np.maximum(x[:, _TENURE], recency), 0.0)  # a first purchase today: T = t_x = 0
    return frequency, recency, age, seen


@dataclass(frozen=True)
class ActivityForecast:
    """One fitted buy-till-you-die model and the horizon it answers for."""

    model: str  # a key of MODELS
    params: dict[str, float]
    horizon_days: int
    figures: dict[str, float] = field(default_factory=dict)  # what the trainer measured (validation, test)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ForecastError(f"forecast model {self.model!r}: one of {', '.join(MODELS)}")
        names = MODELS[self.model].PARAMS
        if set(self.params) != set(names):
            raise ForecastError(f"{self.model} needs parameters {', '.join(names)}, got {', '.join(self.params)}")
        if not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in self.params.values()):
            raise ForecastError(f"{self.model} parameters must be finite and positive: {self.params}")
        if not isinstance(self.horizon_days, int) or self.horizon_days < 1:
            raise ForecastError(f"horizon_days must be a positive whole number of days, got {self.horizon_days!r}")

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p_active, expected_transactions, seen)`` per row of ``FEATURE_NAMES``; NaN where not ``seen``."""
        frequency, recency, age, seen = summaries(features)
        module, horizon = MODELS[self.model], float(self.horizon_days)
        with np.errstate(all="ignore"):
            alive = module.p_alive(self.params, frequency, recency, age)  # shared by both answers
            p_active = np.clip(module.p_active(self.params, frequency, recency, age, horizon, alive), 0.0, 1.0)
            expected = np.maximum(module.expected_purchases(self.params, frequency, recency, age, horizon, alive), 0.0)
        usable = seen & np.isfinite(p_active) & np.isfinite(expected)
        return np.where(usable, p_active, np.nan), np.where(usable, expected, np.nan), usable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ActivityForecast:
        if not isinstance(data, dict):
            raise ForecastError(f"a forecast is a JSON object, not {type(data).__name__}")
        try:
            return cls(model=data["model"], params={k: float(v) for k, v in dict(data["params"]).items()},
                       horizon_days=data["horizon_days"], figures=dict(data.get("figures") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ForecastError):
                raise
            raise ForecastError(f"not a forecast: {type(exc).__name__}: {exc}") from exc

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: Path) -> ActivityForecast:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ForecastError(f"{path}: {type(exc).__name__}: {exc}") from exc
        return cls.from_dict(data)
