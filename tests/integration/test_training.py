"""Training on the real stack: stream simulated data -> Feast -> fit -> MLflow registry -> the promotion gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activity_settings import Settings
from features.transform import FEATURE_NAMES
from tests.integration.conftest import training_settings

pytestmark = pytest.mark.integration
WORSE = {"forest_trees": 2, "forest_max_depth": 1, "booster_rounds": 1, "booster_max_depth": 1}


def test_first_run_registers_a_champion_with_every_artifact(trained: Settings, first, tmp_path: Path) -> None:
    from model_contract import registry

    outcome, _ = first
    assert outcome.decision.promote, outcome.decision.reasons
    client = registry.client(trained)
    champion = client.get_model_version_by_alias(trained.mlflow.registered_model, "champion")
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
    loaded = registry.load_by_alias(trained, "champion", tmp_path)
    assert loaded is not None and loaded.onnx_path.is_file()
    from model_contract.artifacts import FORECAST_FILE
    from model_contract.forecast import ActivityForecast

    forecast = ActivityForecast.load(loaded.artifact(FORECAST_FILE))
    assert forecast.horizon_days == 30 and run.data.tags["forecast_model"] == forecast.model
    logged = run.data.metrics[f"forecast_{forecast.model}_test_roc_auc"]
    assert logged == pytest.approx(forecast.figures["test_roc_auc"])
    assert forecast.figures["test_roc_auc"] > 0.6
    import mlflow

    card = mlflow.artifacts.load_text(f"runs:/{outcome.run_id}/model_card.md")
    assert "## Activity forecast" in card and f"from {forecast.model}" in card

    info = mlflow.models.get_model_info(f"models:/{trained.mlflow.registered_model}@champion")
    assert info.signature is not None and [c.name for c in info.signature.inputs] == list(FEATURE_NAMES)
    assert (loaded.directory / "input_example.json").is_file()


def test_onnx_export_agrees_with_the_native_ensemble(trained: Settings, first, tmp_path: Path) -> None:
    from model_contract import registry
    from model_contract.onnx_runner import OnnxScorer, as_matrix
    from training.tracking import load_ensemble

    _, data = first
    loaded = registry.load_by_alias(trained, "champion", tmp_path)
    x = as_matrix(data.part("test"))
    native = load_ensemble(loaded).predict_proba(x)
    onnx = OnnxScorer(loaded.onnx_path).predict_proba(x)
    np.testing.assert_allclose(onnx, native, atol=1e-5, rtol=0)


def test_a_worse_model_does_not_take_the_champion_alias(trained: Settings, first) -> None:
    from model_contract import registry
    from training.pipeline import train

    outcome, data = first
    worse = train(training_settings(trained, **WORSE), data=data)
    assert not worse.decision.promote
    assert worse.metrics["ensemble"]["roc_auc"] < outcome.metrics["ensemble"]["roc_auc"]
    client = registry.client(trained)
    name = trained.mlflow.registered_model
    assert str(client.get_model_version_by_alias(name, "champion").version) == outcome.version
    assert str(client.get_model_version_by_alias(name, "challenger").version) == worse.version
    assert "does not beat the champion" in client.get_model_version(name, worse.version).tags["promotion"]


def test_a_failed_run_leaves_the_champion_and_says_why(trained: Settings, first) -> None:
    from model_contract import registry
    from training.pipeline import train

    outcome, data = first
    broken = type(data)(frame=data.frame.drop(columns=["tx_count_7d"]), split=data.split, daily=data.daily)
    with pytest.raises(KeyError):
        train(trained, data=broken)
    client = registry.client(trained)
    runs = client.search_runs([registry.experiment_id(trained)], order_by=["attributes.start_time DESC"],
                              max_results=1)
    assert runs[0].info.status == "FAILED" and "tx_count_7d" in runs[0].data.tags["failure"]
    champion = client.get_model_version_by_alias(trained.mlflow.registered_model, "champion")
    assert str(champion.version) == outcome.version


def test_training_set_as_of_split_has_gaps_of_one_horizon(trained: Settings, first) -> None:
    _, data = first
    horizon = trained.training.horizon_days
    assert data.split.train.max() + horizon <= data.split.validation.min()
    assert data.split.validation.max() + horizon <= data.split.test.min()
    assert set(data.frame["label"]) == {"decline", "stable", "growth"}


def test_the_cli_trains_reports_and_refuses_to_overlap(trained: Settings, first) -> None:
    import subprocess
    import sys

    from tests.conftest import settings_env
    from training.schedule import exclusive_run

    cli = [sys.executable, "-m", "activity", "train"]
    env = settings_env(trained) | {"COLUMNS": "160"}
    result = subprocess.run([*cli, "run"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for shown in ("ensemble", "bg_nbd", "pareto_nbd", "recency_frequency", "current champion", "version 3 ->"):
        assert shown in result.stdout, shown
    status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "champion" in status.stdout
    with exclusive_run(trained):
        blocked = subprocess.run([*cli, "run"], env=env, capture_output=True, text=True, timeout=120)
    assert blocked.returncode == 1 and "already in progress" in blocked.stderr
    assert "champion is unchanged" in blocked.stderr


def test_the_spark_backend_registers_a_model_the_same_way(trained: Settings, first) -> None:
    from model_contract import registry
    from training.pipeline import train

    _, data = first
    spark_settings = trained.model_copy(update={"training": trained.training.model_copy(update={"backend": "spark"})})
    outcome = train(spark_settings, data=data)
    run = registry.client(trained).get_run(outcome.run_id)
    assert run.data.params["backend"] == "spark" and run.info.status == "FINISHED"
    assert outcome.metrics["ensemble"]["roc_auc"] > outcome.metrics["persistence"]["roc_auc"]
    assert {"random_forest", "xgboost", "bg_nbd", "pareto_nbd"} <= set(outcome.metrics)
