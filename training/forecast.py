"""Fit the scorer's activity forecast (``model_contract.forecast``) on the training rows' features.

Both classic models are fitted by maximum likelihood on each customer's summaries at their last
training ``as_of`` (repeat transactions, recency and age, read from the same features the scorer
reads), the one with the lower log loss on the validation rows' "any transaction in the next
horizon" is kept, and both are measured on the test rows: ROC-AUC and log loss of P(active),
calibration error, and the mean absolute error and Spearman correlation of the expected against
the actual transactions. Validation and test rows never inform the parameters.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from features.state import ENTITY_KEY
from features.transform import FEATURE_NAMES
from model_contract.evaluate import calibration_error, log_loss, roc_auc
from model_contract.forecast import MODELS, ActivityForecast, summaries
from model_contract.labels import as_of_days

log = logging.getLogger(__name__)

FIT_CUSTOMERS = 20_000  # four population parameters need no more


class ForecastUnavailable(RuntimeError):
    """Neither classic model could be fitted on these rows."""


def _features(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)


def calibration_rows(train: pd.DataFrame, seed: int = 0, cap: int = FIT_CUSTOMERS) -> pd.DataFrame:
    """Each customer's row at their last training ``as_of``, if they had purchased by then (at most ``cap``)."""
    latest = train.assign(_day=as_of_days(train)).sort_values([ENTITY_KEY, "_day"], kind="stable")
    latest = latest.drop_duplicates(ENTITY_KEY, keep="last")
    frequency, recency, age, seen = summaries(_features(latest))
    rfm = pd.DataFrame({"frequency": frequency, "recency": recency, "T": age})[seen & (age > 0)]
    return rfm.sample(n=cap, random_state=seed) if len(rfm) > cap else rfm.reset_index(drop=True)


def rank_correlation(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side is constant (it is undefined there)."""
    if np.ptp(predicted) > 0 and np.ptp(actual) > 0:
        return float(spearmanr(predicted, actual).statistic)
    return math.nan


def measure(forecast: ActivityForecast, frame: pd.DataFrame) -> dict[str, float]:
    """The forecast against ``frame``'s ``next`` counts (rows with a purchase on record)."""
    p_active, expected, seen = forecast.predict(_features(frame))
    actual = frame["next"].to_numpy(dtype=np.float64)[seen]
    p, e, active = p_active[seen], expected[seen], actual > 0
    if len(p) == 0:
        return {"rows": 0.0}
    return {
        "rows": float(len(p)),
        "active_share": float(active.mean()),
        "roc_auc": roc_auc(active, p),
        "log_loss": log_loss(active.astype(np.int64), np.column_stack([1.0 - p, p])),
        "ece": calibration_error(p, active.astype(np.float64)),
        "count_mae": float(np.mean(np.abs(e - actual))),
        "count_spearman": rank_correlation(e, actual),
    }


def fit_forecast(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, horizon_days: int,
                 seed: int = 0) -> tuple[ActivityForecast, dict[str, dict[str, float]]]:
    """The forecast to register and every fitted model's figures (``{model: {validation_*, test_*}}``)."""
    rfm = calibration_rows(train, seed)
    if len(rfm) < 2:
        raise ForecastUnavailable(f"{len(rfm)} customers with a purchase in the training rows: too few to fit")
    fitted: dict[str, ActivityForecast] = {}
    figures: dict[str, dict[str, float]] = {}
    for name, module in MODELS.items():
        try:
            candidate = ActivityForecast(name, module.fit_params(rfm), horizon_days)
        except Exception as exc:  # a model that cannot be fitted here leaves the other one
            log.warning("the %s forecast could not be fitted: %s: %s", name, type(exc).__name__, exc)
            continue
        scores = {f"validation_{k}": v for k, v in measure(candidate, validation).items()}
        scores |= {f"test_{k}": v for k, v in measure(candidate, test).items()}
        fitted[name], figures[name] = candidate, scores
    if not fitted:
        raise ForecastUnavailable("neither BG/NBD nor Pareto/NBD could be fitted on the training rows")

    def validation_loss(name: str) -> float:
        loss = figures[name].get("validation_log_loss", math.nan)
        return loss if math.isfinite(loss) else math.inf

    best = min(fitted, key=validation_loss)
    chosen = fitted[best]
    kept = ActivityForecast(chosen.model, chosen.params, chosen.horizon_days,
                            {k: v for k, v in figures[best].items() if math.isfinite(v)})
    return kept, figures
