"""Evaluation metrics, plots and the model card on small hand-made cases with known answers."""

from __future__ import annotations

import math
import re
from datetime import date

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from model_contract.evaluate import (
    HEADLINE,
    calibration_error,
    comparison_markdown,
    comparison_table,
    evaluate,
    top_fraction_lift,
    top_label_ece,
)
from model_contract.labels import CLASSES, LabelPolicy
from training.model_card import model_card
from training.plots import save_all

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def one_hot(y: np.ndarray) -> np.ndarray:
    return np.eye(len(CLASSES))[y]


def noisy_case(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Informative but imperfect probabilities: the true class gets a boost over Dirichlet noise."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.2, 0.6, 0.2])
    raw = rng.dirichlet(np.ones(3), size=n) + 0.8 * one_hot(y)
    probabilities = raw / raw.sum(axis=1, keepdims=True)
    return y, probabilities, probabilities.argmax(axis=1)


def test_perfect_confident_predictions_score_perfectly() -> None:
    y = np.array([0, 1, 2, 1, 0, 2, 1, 1, 1, 0])
    metrics = evaluate(y, one_hot(y), y)
    assert metrics.macro_f1 == 1 and metrics.accuracy == 1
    assert metrics.roc_auc == 1 and metrics.pr_auc == 1
    assert metrics.ece == pytest.approx(0, abs=1e-12) and metrics.classwise_ece == pytest.approx(0, abs=1e-12)
    assert metrics.log_loss == pytest.approx(0, abs=1e-12)
    assert metrics.precision == {"decline": 1, "stable": 1, "growth": 1}
    assert metrics.rows == 10 and metrics.share == pytest.approx({"decline": 0.3, "stable": 0.5, "growth": 0.2})
    # 3 decliners in 10 rows; the top decile (1 row) is a decliner: rate 1 / 0.3
    assert metrics.decline_lift_top_decile == pytest.approx(1 / 0.3)


def test_metrics_agree_with_sklearn_on_a_noisy_case() -> None:
    y, probabilities, predicted = noisy_case()
    metrics = evaluate(y, probabilities, predicted)
    assert metrics.macro_f1 == pytest.approx(f1_score(y, predicted, average="macro"))
    assert metrics.roc_auc == pytest.approx(roc_auc_score(y, probabilities, multi_class="ovr", average="macro"))
    assert metrics.log_loss == pytest.approx(log_loss(y, probabilities))
    assert 0.5 < metrics.roc_auc < 1 and 0 < metrics.ece < 0.5 and metrics.decline_lift_top_decile > 1


def test_confident_wrong_predictions_are_miscalibrated_and_clipped_in_the_log_loss() -> None:
    y = np.array([0, 1, 2, 0])
    wrong = one_hot((y + 1) % 3)
    metrics = evaluate(y, wrong, wrong.argmax(axis=1))
    assert metrics.ece == pytest.approx(1) and metrics.accuracy == 0 and metrics.macro_f1 == 0
    assert metrics.log_loss == pytest.approx(-math.log(1e-15))  # finite: probabilities are clipped


def test_ece_by_hand() -> None:
    # bin [0.6, 0.667): 2 rows, confidence 0.6, both correct -> gap 0.4; bin [0.933, 1]: 2 rows at 1.0, one
    # correct -> gap 0.5. ECE = 2/4 * 0.4 + 2/4 * 0.5
    assert calibration_error(np.array([0.6, 0.6, 1.0, 1.0]), np.array([1, 1, 1, 0])) == pytest.approx(0.45)
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert top_label_ece(np.array([0, 1, 0, 1]), probabilities) == pytest.approx(0.45)


def test_lift_by_hand() -> None:
    # 20 rows, 4 decliners (rate 0.2); the top decile is the 2 highest scores: one decliner -> rate 0.5 -> 2.5
    positive = np.zeros(20, dtype=bool)
    positive[[0, 5, 6, 7]] = True
    score = np.linspace(0.0, 0.5, 20)
    score[0], score[1] = 0.99, 0.98  # row 0 (decliner) and row 1 (not) on top
    assert top_fraction_lift(positive, score) == pytest.approx(0.5 / 0.2)
    # 30 rows -> the top decile is exactly 3 rows (not 4): all 3 are decliners, 6 of 30 overall
    positive, score = np.zeros(30, dtype=bool), np.arange(30.0)[::-1]
    positive[[0, 1, 2, 10, 11, 12]] = True  # the 3 highest scores are decliners, the 4th is not
    assert top_fraction_lift(positive, score) == pytest.approx(1.0 / 0.2)


def test_lift_ignores_row_order_among_ties() -> None:
    positive = np.array([True, False, False, False, False, False, False, False, False, True] * 3)
    assert top_fraction_lift(positive, np.full(30, 0.2)) == pytest.approx(1)  # a constant score is random
    assert top_fraction_lift(positive, np.zeros(30)) == top_fraction_lift(positive[::-1], np.zeros(30))


def test_a_missing_class_gives_nan_not_an_exception() -> None:
    y = np.array([1, 2, 1, 2, 1, 2])  # no decliners
    probabilities = np.array([[0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1],
                              [0.0, 0.3, 0.7], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]])
    metrics = evaluate(y, probabilities, probabilities.argmax(axis=1))
    assert math.isnan(metrics.roc_auc_per_class["decline"]) and math.isnan(metrics.roc_auc)
    assert math.isnan(metrics.pr_auc_per_class["decline"]) and math.isnan(metrics.pr_auc)
    assert math.isnan(metrics.recall["decline"]) and math.isnan(metrics.precision["decline"])
    assert math.isnan(metrics.decline_lift_top_decile) and math.isnan(metrics.macro_f1)
    assert metrics.roc_auc_per_class["stable"] == 1 and metrics.accuracy == 1
    assert np.isfinite(metrics.log_loss) and np.isfinite(metrics.ece) and np.isfinite(metrics.classwise_ece)


def test_predicting_an_absent_class_scores_zero_f1_for_it() -> None:
    y = np.array([1, 1, 2, 2])
    predicted = np.array([0, 1, 2, 2])
    metrics = evaluate(y, one_hot(predicted), predicted)
    assert metrics.precision["decline"] == 0 and math.isnan(metrics.recall["decline"])
    assert metrics.f1 == pytest.approx({"decline": 0, "stable": 2 / 3, "growth": 1})
    assert metrics.macro_f1 == pytest.approx((0 + 2 / 3 + 1) / 3)


def test_no_rows_gives_nan_everywhere() -> None:
    metrics = evaluate(np.array([], dtype=int), np.empty((0, 3)), np.array([], dtype=int))
    values = metrics.as_dict()
    assert values.pop("rows") == 0 and all(math.isnan(v) for v in values.values())


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        evaluate(np.array([0, 1]), np.ones((2, 2)) / 2, np.array([0, 1]))
    with pytest.raises(ValueError, match="class indices"):
        evaluate(np.array([0, 3]), np.ones((2, 3)) / 3, np.array([0, 1]))


def test_as_dict_is_flat_floats_with_mlflow_safe_names() -> None:
    values = evaluate(*noisy_case()).as_dict()
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", name) for name in values)
    assert all(type(v) is float for v in values.values())
    for name in ("macro_f1", "roc_auc", "pr_auc", "log_loss", "ece", "classwise_ece", "decline_lift_top_decile",
                 "accuracy", "rows", "precision_decline", "recall_growth", "roc_auc_stable", "pr_auc_decline",
                 "share_decline"):
        assert name in values


def test_comparison_table_and_markdown() -> None:
    y, probabilities, predicted = noisy_case()
    prior = np.tile(np.bincount(y, minlength=3) / len(y), (len(y), 1))
    results = {"ensemble": evaluate(y, probabilities, predicted),
               "prior": evaluate(y, prior, np.ones(len(y), dtype=int))}
    table = comparison_table(results)
    assert list(table.index) == ["ensemble", "prior"] and list(table.columns) == list(HEADLINE)
    assert table.loc["prior", "roc_auc"] == pytest.approx(0.5)
    assert table.loc["prior", "decline_lift_top_decile"] == pytest.approx(1)
    assert table.loc["ensemble", "roc_auc"] > table.loc["prior", "roc_auc"]
    lines = comparison_markdown(results).splitlines()
    assert lines[0] == "| model | " + " | ".join(HEADLINE) + " |"
    assert lines[2].startswith("| ensemble | ") and lines[3].startswith("| prior | 0.5000 | ")
    assert len(lines) == 4


def test_plots_are_written_as_png_files(tmp_path) -> None:  # pytest fixture
    y, probabilities, predicted = noisy_case(120)
    names = [f"feature_{i}" for i in range(25)]
    rng = np.random.default_rng(1)
    importances = {"random_forest": rng.random(25), "xgboost": rng.random(25) * 40}
    paths = save_all(y, probabilities, predicted, importances, tmp_path / "plots", feature_names=names)
    assert sorted(p.name for p in paths) == sorted(
        ["roc_curves.png", "pr_curves.png", "confusion_matrix.png", "calibration.png", "feature_importance.png"])
    for path in paths:
        assert path.stat().st_size > 1_000 and path.read_bytes()[:8] == PNG_MAGIC


def test_plots_survive_a_missing_class(tmp_path) -> None:  # pytest fixture
    y = np.array([1, 2, 1, 2])
    probabilities = np.array([[0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1], [0.0, 0.3, 0.7]])
    paths = save_all(y, probabilities, probabilities.argmax(axis=1), {}, tmp_path)
    assert len(paths) == 4 and all(p.stat().st_size > 0 for p in paths)


def test_model_card_holds_the_windows_policy_features_and_comparison() -> None:
    y, probabilities, predicted = noisy_case()
    results = {"ensemble": evaluate(y, probabilities, predicted),
               "xgboost": evaluate(y, probabilities, (predicted + 1) % 3)}
    split = {"test": (date(2024, 12, 1), date(2024, 12, 15), 300), "train": ("2024-10-04", "2024-10-14", 1_200),
             "validation": ("2024-11-03", "2024-11-03", 300)}
    card = model_card(model_name="activity", split=split,
                      policy=LabelPolicy(horizon_days=30, decline_below=-0.3, growth_above=0.3),
                      feature_names=["tx_count_7d", "spend_30d"], table=comparison_table(results),
                      headline=results["ensemble"].as_dict(), model_version="v-test", details={"run id": "abc123"})
    assert card.startswith("# Model card: activity, version v-test\n")
    assert comparison_markdown(results) in card
    lines = card.splitlines()
    windows = [line for line in lines if line.startswith(("| train", "| validation", "| test"))]
    assert windows == ["| train | 2024-10-04 | 2024-10-14 | 1200 |", "| validation | 2024-11-03 | 2024-11-03 | 300 |",
                       "| test | 2024-12-01 | 2024-12-15 | 300 |"]  # time order, whatever the dict order
    assert "change <= -0.3" in card and "30 days" in card and "- `spend_30d`" in card
    assert "**run id**: abc123" in card and "simulated" in card and "validation window" in card
    headline = results["ensemble"]
    assert f"| macro_f1 | {headline.macro_f1:.4f} |" in card and "300 test rows." in card
    assert f"| decline | {headline.share['decline']:.4f} | {headline.precision['decline']:.4f} |" in card


def test_model_card_shows_missing_metrics_as_not_available() -> None:
    card = model_card(model_name="activity", split={"test": ("2024-01-01", "2024-01-02", 1)}, policy=LabelPolicy(),
                      feature_names=[], table=comparison_table({}), headline={"roc_auc": math.nan})
    assert "| roc_auc | n/a |" in card and "version unregistered" in card


def test_model_card_shows_the_activity_forecast_when_there_is_one() -> None:
    base = {"model_name": "activity", "split": {"test": ("2024-01-01", "2024-01-02", 1)}, "policy": LabelPolicy(),
            "feature_names": [], "table": comparison_table({}), "headline": {"roc_auc": 0.8}}
    assert "Activity forecast" not in model_card(**base)
    card = model_card(**base, forecast={"model": "pareto_nbd", "horizon_days": 30,
                                        "figures": {"validation_roc_auc": 0.7, "test_roc_auc": 0.81234,
                                                    "test_count_mae": 0.5}})
    assert "## Activity forecast" in card and "from pareto_nbd" in card and "next 30 days" in card
    assert "| roc_auc | 0.8123 |" in card and "| count_mae | 0.5000 |" in card and "0.7000" not in card
