"""The ensemble's pieces for either target: three classes (change) or two (active)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score

from model_contract.evaluate import evaluate
from model_contract.labels import TARGET_CLASSES
from training.model import ModelParams, fit_ensemble, softmax_form, tune_decision_weights

ACTIVE = TARGET_CLASSES["active"]


def binary_case(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0.0, 0.8, rows) > 0.6).astype(np.int64)  # about 30 % active
    return x, y


def test_a_binary_logistic_fit_becomes_the_same_probabilities_in_softmax_form() -> None:
    x, y = binary_case(500, seed=1)
    x = x.astype(np.float64)
    model = LogisticRegression().fit(x, y)
    coef, intercept = softmax_form(model, 2)
    logits = x @ coef.T + intercept
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(axis=1, keepdims=True), model.predict_proba(x), atol=1e-12)


def test_a_class_missing_from_the_fit_is_never_predicted() -> None:
    x, y = binary_case(300, seed=2)
    coef, intercept = softmax_form(LogisticRegression().fit(x, y * 2), 3)  # classes 0 and 2 only
    assert intercept[1] < -1e8 and (coef[1] == 0).all()


def test_two_class_decision_weights_are_a_threshold_tuned_for_macro_f1() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(2_000) < 0.2
    p_active = np.clip(0.15 + 0.3 * y + rng.normal(0, 0.15, len(y)), 0.0, 1.0)
    probabilities = np.column_stack([1 - p_active, p_active])
    weights = tune_decision_weights(probabilities, y.astype(int))
    assert weights.shape == (2,) and weights[1] == 1.0
    tuned = f1_score(y, np.argmax(probabilities * weights, axis=1), average="macro")
    assert tuned > f1_score(y, np.argmax(probabilities, axis=1), average="macro")  # the plain argmax under-calls


def test_the_ensemble_fits_and_scores_the_active_target() -> None:
    x, y = binary_case(3_000, seed=4)
    fitted = fit_ensemble(x[:2_000], y[:2_000], x[2_000:2_500], y[2_000:2_500],
                          ModelParams(forest_trees=30, booster_rounds=40, threads=1), classes=ACTIVE)
    test_x, test_y = x[2_500:], y[2_500:]
    for model in (fitted.ensemble, *fitted.singles.values()):
        probabilities = model.predict_proba(test_x)
        assert probabilities.shape == (len(test_x), 2)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    metrics = evaluate(test_y, fitted.ensemble.predict_proba(test_x), fitted.ensemble.predict(test_x), ACTIVE)
    assert metrics.roc_auc == np.float64(roc_auc_score(test_y, fitted.ensemble.predict_proba(test_x)[:, 1]))
    assert metrics.roc_auc > 0.8 and set(metrics.f1) == {"inactive", "active"}
    assert "f1_inactive" in metrics.as_dict() and "share_active" in metrics.as_dict()


def test_training_for_the_scorer_refuses_a_target_it_does_not_serve(tmp_path) -> None:  # pytest fixture
    import pytest

    from activity_settings import load_settings
    from training.pipeline import check_servable

    check_servable(load_settings(data_dir=tmp_path))
    with pytest.raises(ValueError, match="training.target='active'.*activity backtest --target active"):
        check_servable(load_settings(data_dir=tmp_path, training={"target": "active"}))
