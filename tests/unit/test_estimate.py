"""Confidence-based performance estimation, the monitor's calibration map and the drift shares, on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from model_contract.evaluate import evaluate
from model_contract.labels import CLASSES
from monitoring.calibration import CalibrationError, CalibrationMap, check_calibration, fit_calibration
from monitoring.drift_share import drift_shares
from monitoring.estimate import (
    ALERT_NAME,
    EstimateError,
    estimate,
    estimate_alert,
    expected_confusion,
    expected_roc_auc,
    simulated_outcomes,
)
from monitoring.estimate_job import logged_answers


def calibrated(n: int, spread: float, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, len(CLASSES))) * spread
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def test_estimate_matches_realized_quality_of_outcomes_drawn_from_calibrated_probabilities() -> None:
    p = calibrated(4_000, 1.5, seed=1)
    decided = p.argmax(axis=1)
    estimated = estimate(p, decided)
    realized = [evaluate(y, p, decided) for y in simulated_outcomes(p, 40, seed=99)]
    assert estimated.roc_auc == pytest.approx(np.mean([m.roc_auc for m in realized]), abs=0.003)
    assert estimated.macro_f1 == pytest.approx(np.mean([m.macro_f1 for m in realized]), abs=0.005)
    inside = np.mean([m.roc_auc in estimated.roc_auc_band for m in realized])
    assert inside >= 0.85
    assert sum(estimated.share.values()) == pytest.approx(1.0)


def test_answers_the_model_is_unsure_about_lower_the_estimate() -> None:
    sure, unsure = calibrated(2_000, 2.5, seed=2), calibrated(2_000, 0.4, seed=3)
    assert estimate(unsure, unsure.argmax(axis=1)).roc_auc < estimate(sure, sure.argmax(axis=1)).roc_auc - 0.1


def test_expected_confusion_puts_each_rows_probabilities_in_its_decided_column() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    confusion = expected_confusion(p, np.array([0, 2]))
    np.testing.assert_allclose(confusion[:, 0], [0.7, 0.2, 0.1])
    np.testing.assert_allclose(confusion[:, 2], [0.1, 0.3, 0.6])
    np.testing.assert_allclose(confusion[:, 1], 0.0)


def test_expected_roc_auc_of_certain_outcomes_is_the_plain_roc_auc() -> None:
    score = np.array([0.1, 0.4, 0.35, 0.8])
    assert expected_roc_auc(score, np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.75)
    assert math.isnan(expected_roc_auc(score, np.ones(4)))


@pytest.mark.parametrize("probabilities, decided, message", [
    (np.full((3, 2), 0.5), np.zeros(3), "rows, 3"),
    (np.full((3, 3), 0.5), np.zeros(3), "sum to 1"),
    (np.full((3, 3), 1 / 3), np.zeros(2), "one decision per row"),
    (np.full((3, 3), 1 / 3), np.full(3, 5), "class indices"),
    (np.zeros((0, 3)), np.zeros(0), "no answers"),
])
def test_bad_answers_are_refused_naming_the_problem(probabilities: np.ndarray, decided: np.ndarray,
                                                    message: str) -> None:
    with pytest.raises(EstimateError, match=message):
        estimate(probabilities, decided)


def test_alert_fires_only_beyond_the_margin() -> None:
    p = calibrated(1_000, 1.0, seed=4)
    estimated = estimate(p, p.argmax(axis=1), draws=20)
    assert estimate_alert(estimated, "3", "champion", estimated.roc_auc + 0.05, 0.05) is None
    alert = estimate_alert(estimated, "3", "champion", estimated.roc_auc + 0.08, 0.05)
    assert alert is not None and alert.name == ALERT_NAME and alert.labels == {"model_version": "3", "arm": "champion"}
    assert estimate_alert(estimated, "3", "champion", None, 0.05) is None


def test_calibration_map_fit_on_outcomes_repairs_overconfident_probabilities() -> None:
    truth = calibrated(6_000, 1.0, seed=5)
    y = simulated_outcomes(truth, 1, seed=6)[0]
    overconfident = truth ** 2.5 / (truth ** 2.5).sum(axis=1, keepdims=True)
    fitted = fit_calibration(overconfident, y, min_rows=100)
    check = check_calibration(overconfident, y, fitted)
    assert check.ece > 0.05 and check.ece_mapped < 0.02
    assert check.log_loss_mapped < check.log_loss
    again = CalibrationMap.from_dict(fitted.as_dict())
    np.testing.assert_allclose(again.apply(overconfident), fitted.apply(overconfident))
    np.testing.assert_allclose(CalibrationMap.identity().apply(truth), truth, atol=1e-9)


def test_calibration_refuses_too_few_or_one_sided_outcomes() -> None:
    p = calibrated(200, 1.0, seed=7)
    with pytest.raises(CalibrationError, match="calibration_min_rows"):
        fit_calibration(p, np.zeros(200, dtype=int), min_rows=500)
    with pytest.raises(CalibrationError, match="growth"):
        fit_calibration(p, np.zeros(200, dtype=int), min_rows=100)


def test_time_driven_features_are_reported_apart_and_importance_weights_the_share() -> None:
    drifted = {"tenure_days": True, "share_online_90d": True, "tx_count_30d": False, "unused": True}
    importances = {"tenure_days": 0.2, "share_online_90d": 0.1, "tx_count_30d": 0.7, "unused": 0.0}
    shares = drift_shares(drifted, importances, ("tenure_days",))
    assert shares.time_driven == {"tenure_days": True}
    assert shares.counted == ("share_online_90d", "tx_count_30d")
    assert shares.drifted == ("share_online_90d",)
    assert shares.unweighted == pytest.approx(0.5)
    assert shares.weighted == pytest.approx(0.1 / 0.8)
    assert math.isnan(drift_shares(drifted, None).weighted)
    assert drift_shares(drifted, None).unweighted == pytest.approx(2 / 3)


def test_logged_answers_keep_a_versions_latest_answer_per_customer_and_day() -> None:
    stamp = pd.Timestamp("2026-06-01T10:00:00Z")
    frame = pd.DataFrame({
        "customer_id": ["a", "a", "b", "c", "d"], "as_of": [stamp] * 5, "label": [0, 2, 1, 1, 1],
        "p_decline": [0.6, 0.1, 0.2, 0.2, np.nan], "p_stable": [0.3, 0.2, 0.6, 0.6, 0.5],
        "p_growth": [0.1, 0.7, 0.2, 0.2, 0.5], "model_version": ["1", "1", "1", None, "1"],
        "arm": ["champion"] * 5, "degraded": [False, False, True, True, False], "shadow": [False] * 5,
        "logged_at": [stamp, stamp + pd.Timedelta(minutes=1), stamp, stamp, stamp]})
    kept = logged_answers(frame)
    assert kept["customer_id"].tolist() == ["a"] and kept["label"].tolist() == [2]


def test_bench_report_judges_the_estimate_targets() -> None:
    from activity.bench_report import checks

    figures = {"estimated_auc_abs_error": 0.02, "days_to_detect_estimated": 1, "days_to_detect_realized": 31,
               "false_alarms": 0}
    assert [c.met for c in checks("estimate", figures)] == [True, True, True]
    late = figures | {"days_to_detect_estimated": None, "false_alarms": 2, "estimated_auc_abs_error": 0.05}
    assert [c.met for c in checks("estimate", late)] == [False, None, False]
