"""ONNX export: the one-graph model must score exactly like the native ensemble, extreme rows included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from sklearn.ensemble import RandomForestClassifier

from features.transform import COLD_START, FEATURE_NAMES
from model_contract.artifacts import LABEL, PROBABILITIES
from model_contract.labels import CLASSES
from model_contract.onnx_runner import OnnxScorer
from training.model import (
    ActivityEnsemble,
    FittedModels,
    ModelParams,
    SingleModel,
    Stacker,
    _full_proba,  # the native padding of a member's missing class, which the export must mirror
    fit_ensemble,
)
from training.onnx_export import MAIN_OPSET, ensemble_to_onnx, fallback_to_onnx, save, single_to_onnx

TOLERANCE = 1e-5  # absolute, on probabilities
F32 = np.finfo(np.float32)


def synthetic(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Feature-shaped columns (integer counts, heavy-tailed spends, shares, capped days) and a learnable label.

    Counts make many inputs sit exactly on values seen in training, which is where a float32
    threshold rounded the wrong way would send a row down the other branch.
    """
    level = rng.gamma(2.0, 1.5, rows)  # usual transactions per week
    trend = rng.normal(0.0, 0.5, rows)  # log change of activity: what the label follows
    weekly = level * np.exp(trend)
    columns = {}
    for name in FEATURE_NAMES:
        if name.startswith("tx_count_"):
            columns[name] = rng.poisson(weekly * int(name.split("_")[2][:-1]) / 7)
        elif name.startswith("spend_"):
            columns[name] = columns[name.replace("spend", "tx_count")] * rng.lognormal(3.0, 0.8, rows)
        elif name.startswith("trend_"):
            columns[name] = np.log1p(rng.poisson(weekly * 4)) - np.log1p(rng.poisson(level * 4))
        elif name.startswith("share_") or name.endswith("_share_90d"):
            columns[name] = rng.beta(2.0, 5.0, rows)
        elif name == "days_since_last_tx":
            columns[name] = np.minimum(rng.exponential(7.0 / (weekly + 0.05)), COLD_START[name])
        else:
            columns[name] = rng.poisson(level * 4)
    x = np.column_stack([columns[name] for name in FEATURE_NAMES]).astype(np.float32)
    y = np.digitize(trend + rng.normal(0.0, 0.3, rows), [-0.3, 0.3])  # decline / stable / growth
    return x, y


def extreme_rows(typical: np.ndarray) -> np.ndarray:
    """Rows far outside training: all zeros, the cold start, huge and tiny values, and each feature alone huge."""
    whole = [np.zeros(len(FEATURE_NAMES)), np.array([COLD_START[name] for name in FEATURE_NAMES]),
             np.full(len(FEATURE_NAMES), 1e30), np.full(len(FEATURE_NAMES), -1e30),
             np.full(len(FEATURE_NAMES), F32.max), np.full(len(FEATURE_NAMES), -F32.max),
             np.full(len(FEATURE_NAMES), F32.tiny)]
    one_huge = np.repeat(typical[None, :], len(FEATURE_NAMES), axis=0)
    np.fill_diagonal(one_huge, 1e30)
    return np.vstack([*whole, one_huge]).astype(np.float32)


@pytest.fixture(scope="module")
def fitted() -> FittedModels:
    rng = np.random.default_rng(11)
    x, y = synthetic(3000, rng)
    return fit_ensemble(x[:2000], y[:2000], x[2000:], y[2000:],
                        ModelParams(forest_trees=30, booster_rounds=40, threads=1))


@pytest.fixture(scope="module")
def typical() -> np.ndarray:
    return synthetic(1000, np.random.default_rng(12))[0]


@pytest.fixture(scope="module")
def extremes(typical: np.ndarray) -> np.ndarray:
    return extreme_rows(np.median(typical, axis=0))


@pytest.fixture(scope="module")
def rows(typical: np.ndarray, extremes: np.ndarray) -> np.ndarray:
    return np.vstack([typical, extremes])


def exported(fitted: FittedModels, which: str) -> tuple[ActivityEnsemble | SingleModel, onnx.ModelProto]:
    if which == "ensemble":
        return fitted.ensemble, ensemble_to_onnx(fitted.ensemble)
    return fitted.singles[which], single_to_onnx(fitted.singles[which])


def assert_same_scores(native: ActivityEnsemble | SingleModel, scorer: OnnxScorer, x: np.ndarray) -> None:
    expected, got = native.predict_proba(x), scorer.predict_proba(x)
    assert got.dtype == np.float64 and got.shape == (len(x), len(CLASSES))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(scorer.predict(x), native.predict(x))


@pytest.mark.parametrize("which", ["ensemble", "random_forest", "xgboost"])
def test_onnx_scores_like_the_native_model(fitted: FittedModels, rows: np.ndarray, extremes: np.ndarray,
                                          which: str) -> None:
    native, model = exported(fitted, which)
    assert len(np.unique(native.predict(rows))) == len(CLASSES)  # a model predicting one class would prove little
    scorer = OnnxScorer(model)
    assert_same_scores(native, scorer, rows)
    assert_same_scores(native, scorer, extremes)  # again alone, and row by row: no batch effects
    for row in extremes:
        assert_same_scores(native, scorer, row[None, :])


def test_the_graph_has_the_serving_signature(fitted: FittedModels) -> None:
    model = ensemble_to_onnx(fitted.ensemble)
    onnx.checker.check_model(model, full_check=True)
    (features,) = model.graph.input
    assert features.name == "features" and features.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [d.dim_value for d in features.type.tensor_type.shape.dim] == [0, len(FEATURE_NAMES)]
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert outputs[PROBABILITIES].elem_type == TensorProto.FLOAT
    assert [d.dim_value for d in outputs[PROBABILITIES].shape.dim] == [0, len(CLASSES)]
    assert outputs[LABEL].elem_type == TensorProto.INT64 and len(outputs[LABEL].shape.dim) == 1
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[""] == MAIN_OPSET and opsets["ai.onnx.ml"] < 5  # TreeEnsembleClassifier is gone in ml 5
    tree_ops = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    assert len(tree_ops) == 2  # one graph: forest and booster side by side


def test_tolerance_catches_a_slightly_different_stacker(fitted: FittedModels, rows: np.ndarray) -> None:
    """The parity check must be able to fail: a 1e-3 nudge to one intercept is already far outside it."""
    ensemble = fitted.ensemble
    nudged = Stacker(coef=ensemble.stacker.coef, intercept=ensemble.stacker.intercept + [1e-3, 0.0, 0.0])
    other = ActivityEnsemble(ensemble.forest, ensemble.booster, nudged, ensemble.decision_weights)
    gap = np.abs(OnnxScorer(ensemble_to_onnx(other)).predict_proba(rows) - ensemble.predict_proba(rows)).max()
    assert gap > 10 * TOLERANCE


def test_a_member_that_missed_a_class_gets_its_column_back(rows: np.ndarray) -> None:
    """Like ``_full_proba``: the absent class's probability is 0 (then the floor), not a shifted column."""
    x, y = synthetic(1500, np.random.default_rng(13))
    trained = y[:1000] != 1
    forest = RandomForestClassifier(n_estimators=10, min_samples_leaf=10, random_state=0, n_jobs=1)
    forest.fit(x[:1000][trained], y[:1000][trained])
    assert list(forest.classes_) == [0, 2]
    single = SingleModel("random_forest", forest, Stacker.fit([_full_proba(forest, x[1000:])], y[1000:]),
                         np.array([1.0, 0.8, 1.2]))
    assert_same_scores(single, OnnxScorer(single_to_onnx(single)), rows)


def test_a_saved_model_round_trips_through_the_scorer(fitted: FittedModels, rows: np.ndarray,
                                                      tmp_path: Path) -> None:
    model = ensemble_to_onnx(fitted.ensemble)
    path = save(model, tmp_path / "nested" / "model.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    from_file, from_bytes = OnnxScorer(path), OnnxScorer(path.read_bytes())
    np.testing.assert_array_equal(from_file.predict_proba(rows), from_bytes.predict_proba(rows))
    np.testing.assert_array_equal(from_file.predict(rows), from_bytes.predict(rows))
    assert_same_scores(fitted.ensemble, from_file, rows)
    # more threads sum the trees in another order: not bit-identical, still within the tolerance
    assert_same_scores(fitted.ensemble, OnnxScorer(path, intra_op_threads=2), rows)
    assert from_file.feature_names == FEATURE_NAMES and from_file.classes == CLASSES


def test_the_fallback_is_the_booster_alone_renormalised_with_a_plain_argmax(fitted: FittedModels,
                                                                            rows: np.ndarray) -> None:
    booster = fitted.ensemble.booster
    scorer = OnnxScorer(fallback_to_onnx(fitted.ensemble))
    expected = np.clip(_full_proba(booster, rows), 1e-6, 1.0)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scorer.predict_proba(rows), expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(scorer.predict(rows), np.argmax(expected, axis=1))
    assert scorer.feature_names == tuple(FEATURE_NAMES) and scorer.classes == tuple(CLASSES)
