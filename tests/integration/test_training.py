"""Training on the real stack: stream simulated data -> Feast -> fit -> MLflow registry -> the promotion gate."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from activity_settings import Settings
from features.transform import FEATURE_NAMES
from streaming.publish import encode_simulated, publish_tables
from streaming.runner import run_stream
from streaming.simulator import make_population, simulate
from tests.integration.conftest import isolated

pytestmark = pytest.mark.integration
WORSE = {"forest_trees": 2, "forest_max_depth": 1, "booster_rounds": 1, "booster_max_depth": 1}


def training_settings(settings: Settings, **model: object) -> Settings:
    training = settings.training.model_copy(update={
        "horizon_days": 30, "grid_days": 7, "reference_sample_rows": 500,
        "model": settings.training.model.model_copy(update={"forest_trees": 60, "booster_rounds": 80, **model}),
    })
    return settings.model_copy(update={"training": training})


@pytest.fixture(scope="module")
def streamed(kafka_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = isolated(kafka_stack, tmp_path_factory.mktemp("training"))
    population = make_population(3_000, date(2026, 1, 1), 200, seed=11)
    assert publish_tables(settings.kafka, simulate(population), encode_simulated).failed == 0
    run_stream(settings, until_idle_s=2.0)
    return training_settings(settings)


@pytest.fixture(scope="module")
def first(streamed: Settings):  # noqa: ANN201 - (outcome, data)
    from training.pipeline import build_training_data, train

    data = build_training_data(streamed)
    return train(streamed, data=data), data


def test_first_run_registers_a_champion_with_every_artifact(streamed: Settings, first, tmp_path: Path) -> None:  # noqa: ANN001
    from training import tracking

    outcome, _ = first
    assert outcome.decision.promote, outcome.decision.reasons
    client = tracking.client(streamed)
    champion = client.get_model_version_by_alias(streamed.mlflow.registered_model, "champion")
    assert str(champion.version) == outcome.version and champion.run_id == outcome.run_id
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    for name in ("roc_auc", "macro_f1", "log_loss", "ece", "decline_lift_top_decile", "precision_decline",
                 "recall_growth", "pr_auc", "persistence_roc_auc", "random_forest_macro_f1", "xgboost_roc_auc"):
        assert name in run.data.metrics, name
    assert run.data.params["horizon_days"] == "30"
    artifacts = {f.path for f in client.list_artifacts(outcome.run_id)}
    for folder in ("plots", "reference", "evaluation"):
        artifacts |= {f.path for f in client.list_artifacts(outcome.run_id, folder)}
    assert {"model_card.md", "reference/features.parquet", "reference/statistics.json",
            "evaluation/comparison.md"} <= artifacts
    assert len([p for p in artifacts if p.startswith("plots/") and p.endswith(".png")]) >= 5
    loaded = tracking.load_by_alias(streamed, "champion", tmp_path)
    assert loaded is not None and loaded.onnx_path.is_file()
    import mlflow

    info = mlflow.models.get_model_info(f"models:/{streamed.mlflow.registered_model}@champion")
    assert info.signature is not None and [c.name for c in info.signature.inputs] == list(FEATURE_NAMES)
    assert (loaded.directory / "input_example.json").is_file()


def test_onnx_export_agrees_with_the_native_ensemble(streamed: Settings, first, tmp_path: Path) -> None:  # noqa: ANN001
    from training import tracking
    from training.model import as_matrix
    from training.onnx_export import OnnxScorer

    _, data = first
    loaded = tracking.load_by_alias(streamed, "champion", tmp_path)
    x = as_matrix(data.part("test"))
    native = loaded.ensemble().predict_proba(x)
    onnx = OnnxScorer(loaded.onnx_path).predict_proba(x)
    np.testing.assert_allclose(onnx, native, atol=1e-5, rtol=0)


def test_a_worse_model_does_not_take_the_champion_alias(streamed: Settings, first) -> None:  # noqa: ANN001
    from training import tracking
    from training.pipeline import train

    outcome, data = first
    worse = train(training_settings(streamed, **WORSE), data=data)
    assert not worse.decision.promote
    assert worse.metrics["ensemble"]["roc_auc"] < outcome.metrics["ensemble"]["roc_auc"]
    client = tracking.client(streamed)
    name = streamed.mlflow.registered_model
    assert str(client.get_model_version_by_alias(name, "champion").version) == outcome.version
    assert str(client.get_model_version_by_alias(name, "challenger").version) == worse.version
    assert "does not beat the champion" in client.get_model_version(name, worse.version).tags["promotion"]


def test_a_failed_run_leaves_the_champion_and_says_why(streamed: Settings, first) -> None:  # noqa: ANN001
    from training import tracking
    from training.pipeline import train

    outcome, data = first
    broken = type(data)(frame=data.frame.drop(columns=["tx_count_7d"]), split=data.split, daily=data.daily)
    with pytest.raises(KeyError):
        train(streamed, data=broken)
    client = tracking.client(streamed)
    runs = client.search_runs([tracking.experiment_id(streamed)], order_by=["attributes.start_time DESC"],
                              max_results=1)
    assert runs[0].info.status == "FAILED" and "tx_count_7d" in runs[0].data.tags["failure"]
    champion = client.get_model_version_by_alias(streamed.mlflow.registered_model, "champion")
    assert str(champion.version) == outcome.version


def test_training_set_as_of_split_has_gaps_of_one_horizon(streamed: Settings, first) -> None:  # noqa: ANN001
    _, data = first
    horizon = streamed.training.horizon_days
    assert data.split.train.max() + horizon <= data.split.validation.min()
    assert data.split.validation.max() + horizon <= data.split.test.min()
    assert set(data.frame["label"]) == {"decline", "stable", "growth"}
