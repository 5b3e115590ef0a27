"""The Spark backend: members fitted on Spark must convert to local models that score exactly like the Spark ones."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from activity_settings import Settings, load_settings
from features.transform import FEATURE_NAMES
from model_contract.onnx_runner import OnnxScorer, as_matrix
from training.model import N_CLASSES, ModelParams, combine

pytestmark = pytest.mark.integration
PARAMS = ModelParams(forest_trees=20, forest_max_depth=6, forest_min_samples_leaf=5, booster_rounds=30, seed=3,
                     threads=2)
TRAIN_ROWS = 3_000


def synthetic(rows: int, seed: int) -> pd.DataFrame:
    """Feature-shaped columns (counts with ties, heavy-tailed amounts, shares) and 3 imbalanced learnable classes."""
    rng = np.random.default_rng(seed)
    columns = {}
    for i, name in enumerate(FEATURE_NAMES):
        kind = i % 3
        if kind == 0:
            columns[name] = rng.poisson(3 + i, rows).astype(np.float64)
        elif kind == 1:
            columns[name] = rng.lognormal(3.0, 1.2, rows)
        else:
            columns[name] = rng.beta(2, 5, rows)
    frame = pd.DataFrame(columns)
    score = (0.35 * (frame[FEATURE_NAMES[0]] - 3) - 0.8 * np.log(frame[FEATURE_NAMES[1]]) + 4 * frame[FEATURE_NAMES[2]]
             + rng.normal(0, 0.7, rows))
    frame["label_index"] = np.digitize(score, np.quantile(score, [0.12, 0.82]))  # 12% / 70% / 18%
    return frame


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(data_dir=tmp_path_factory.mktemp("spark-training"),
                         spark={"master": "local[2]", "driver_memory": "2g", "shuffle_partitions": 4})


@pytest.fixture(scope="module")
def spark(settings: Settings) -> Iterator[object]:
    from training.spark_backend import start_spark

    session = start_spark(settings)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def fitted(spark, settings: Settings) -> Iterator[tuple[object, object, object]]:
    """(Spark members, converted forest, converted booster), fitted once for the module."""
    from training.spark_backend import booster_to_sklearn, fit_spark_models, forest_to_sklearn

    members = fit_spark_models(spark, synthetic(TRAIN_ROWS, seed=1), PARAMS)
    forest = forest_to_sklearn(members.forest, PARAMS, workdir=settings.home / "spark" / "tmp")
    booster = booster_to_sklearn(members.booster, PARAMS)
    yield members, forest, booster
    members.release()


@pytest.fixture(scope="module")
def holdout(spark) -> tuple[pd.DataFrame, object]:
    """Rows the models never saw, locally and as a Spark frame."""
    from training.spark_backend import training_frame

    rows = synthetic(1_500, seed=2)
    return rows, training_frame(spark, rows)


def spark_probabilities(model, frame) -> np.ndarray:  # a Spark model and a training_frame
    from pyspark.ml.functions import vector_to_array

    from training.spark_backend import ROW

    scored = model.transform(frame).select(ROW, vector_to_array("probability").alias("p")).toPandas()
    return np.stack(scored.sort_values(ROW)["p"].to_numpy())


def test_converted_forest_scores_like_spark(fitted, holdout) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    members, forest, _ = fitted
    assert isinstance(forest, RandomForestClassifier) and len(forest.estimators_) == PARAMS.forest_trees
    assert all(isinstance(tree, DecisionTreeClassifier) for tree in forest.estimators_)
    assert forest.n_features_in_ == len(FEATURE_NAMES) and list(forest.classes_) == [0, 1, 2]
    x_train = as_matrix(synthetic(TRAIN_ROWS, seed=1))  # the fixture's training rows, in ROW order
    np.testing.assert_allclose(forest.predict_proba(x_train), spark_probabilities(members.forest, members.frame),
                               atol=1e-9, rtol=0)
    rows, frame = holdout
    np.testing.assert_allclose(forest.predict_proba(as_matrix(rows)), spark_probabilities(members.forest, frame),
                               atol=1e-9, rtol=0)
    # sklearn's importances, computed from the converted nodes' impurities and weights, are Spark's
    np.testing.assert_allclose(forest.feature_importances_, members.forest.featureImportances.toArray(), atol=1e-9)
    for tree in forest.estimators_:  # thresholds are float32 values: ONNX's float32 thresholds lose nothing
        threshold = tree.tree_.threshold[tree.tree_.children_left >= 0]
        assert (threshold.astype(np.float32).astype(np.float64) == threshold).all()


def test_walking_the_jvm_trees_gives_the_same_nodes_as_the_saved_model(fitted, tmp_path: Path) -> None:
    from training.spark_backend import jvm_nodes, saved_nodes

    members, _, _ = fitted
    saved, walked = saved_nodes(members.forest, tmp_path), jvm_nodes(members.forest)
    for name in ("tree", "left", "right", "impurity", "stats", "count"):
        np.testing.assert_array_equal(getattr(walked, name), getattr(saved, name), err_msg=name)
    internal = saved.left >= 0
    np.testing.assert_array_equal(walked.feature[internal], saved.feature[internal])
    np.testing.assert_array_equal(walked.threshold[internal], saved.threshold[internal])


def test_converted_booster_scores_like_spark(fitted, holdout) -> None:
    from xgboost import XGBClassifier

    members, _, booster = fitted
    assert isinstance(booster, XGBClassifier)
    assert booster.n_classes_ == N_CLASSES and list(booster.classes_) == [0, 1, 2]
    assert booster.get_params()["n_estimators"] == PARAMS.booster_rounds
    rows, frame = holdout
    np.testing.assert_allclose(booster.predict_proba(as_matrix(rows)), spark_probabilities(members.booster, frame),
                               atol=1e-6, rtol=0)


def test_converted_members_stack_pickle_and_export(fitted, holdout) -> None:
    _, forest, booster = fitted
    rows, _ = holdout
    validation, test = rows.iloc[:800], rows.iloc[800:]
    ensemble = combine(forest, booster, as_matrix(validation), validation["label_index"].to_numpy(), PARAMS).ensemble
    probabilities = ensemble.predict_proba(as_matrix(test))
    assert probabilities.shape == (len(test), N_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    buffer = io.BytesIO()
    joblib.dump(ensemble, buffer)
    buffer.seek(0)
    # equal up to the order in which the forest's threads add up the trees
    np.testing.assert_allclose(joblib.load(buffer).predict_proba(as_matrix(test)), probabilities, atol=1e-12)
    from training.onnx_export import ensemble_to_onnx

    scorer = OnnxScorer(ensemble_to_onnx(ensemble))
    np.testing.assert_allclose(scorer.predict_proba(as_matrix(test)), probabilities, atol=1e-5, rtol=0)


def test_fit_members_spark_returns_local_models_and_leaves_a_running_session_alone(spark, settings: Settings,
                                                                                   holdout) -> None:
    from training.spark_backend import fit_members_spark

    small = ModelParams(forest_trees=3, forest_max_depth=None, booster_rounds=3, threads=1)
    forest, booster = fit_members_spark(settings, synthetic(1_000, seed=4), small)
    rows, _ = holdout
    for member in (forest, booster):
        np.testing.assert_allclose(member.predict_proba(as_matrix(rows)).sum(axis=1), 1.0, atol=1e-6)
    assert spark.sparkContext._jsc is not None  # the module's session, active before the call, still runs
    assert spark.range(3).count() == 3
