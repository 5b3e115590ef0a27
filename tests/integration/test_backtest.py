"""`activity backtest` on a file: the stream's validator, the backfill and the trainer on real Spark, Feast and MLflow.

A simulated history is written as a CSV in the shape of a real ledger (its own column names, no
transaction ids, a refund, two broken rows) and backtested at a 30-day horizon.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from activity_settings import Settings, load_settings
from streaming.publish import ColumnMapping, encode_replayed, read_transactions_file
from streaming.schema import InvalidEvent, validate_bytes
from tests.integration.conftest import training_settings

CUSTOMERS, START, DAYS = 500, date(2026, 1, 5), 150
SUMMARY_KEYS = ("target", "horizon_days", "customers", "rows", "model_auc", "model_macro_f1", "bgnbd_auc",
                "bgnbd_macro_f1", "best_baseline", "best_baseline_auc", "best_baseline_macro_f1", "best_f1_baseline",
                "best_f1_baseline_macro_f1")
MAPPING = ColumnMapping(customer_id="client", event_time="when", amount="value")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from streaming.simulator import make_population, simulate

    events = pa.concat_tables(simulate(make_population(CUSTOMERS, START, DAYS, seed=11))).to_pandas()
    frame = pd.DataFrame({"client": events["customer_id"],
                          "when": events["event_time"].dt.strftime("%Y-%m-%d %H:%M:%S"),
                          "value": events["amount"].map("{:.2f}".format)})
    extra = pd.DataFrame({"client": [frame["client"].iloc[0], "c-broken", "c-broken"],
                          "when": [frame["when"].iloc[40], "not a time", frame["when"].iloc[50]],
                          "value": ["-12.50", "3.00", "n/a"]})  # a refund; a bad time; a bad amount
    path = tmp_path_factory.mktemp("ledger") / "ledger.csv"
    pd.concat([frame, extra], ignore_index=True).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return training_settings(load_settings(data_dir=tmp_path_factory.mktemp("user-data"),
                                           spark={"master": "local[2]", "driver_memory": "2g",
                                                  "shuffle_partitions": 4}))


def test_a_ledger_is_backtested_through_the_platforms_own_path(ledger: Path, settings: Settings,
                                                               tmp_path: Path) -> None:
    from features.state import ENTITY_KEY
    from features.store import FeatureWriter
    from model_contract import registry
    from training.backtest import MODELS, BacktestSource, backtest, backtest_settings

    table = read_transactions_file(ledger, MAPPING, BacktestSource(ledger, MAPPING).defaults)
    verdicts = [validate_bytes(value) for value in encode_replayed(table)]
    expected_refused = Counter(v.code.value for v in verdicts if isinstance(v, InvalidEvent))
    assert sum(expected_refused.values()) == 2

    report = backtest(settings, BacktestSource(ledger, MAPPING), horizon_days=30, work_dir=tmp_path / "work")

    assert report.records == table.num_rows
    assert report.rejected == dict(expected_refused)
    assert report.events == table.num_rows - 3  # the refund is valid but not a purchase
    assert report.customers == pd.read_csv(ledger)["client"].nunique() - 1  # c-broken has no valid purchase
    assert report.horizon_days == 30
    assert set(report.metrics) == {*MODELS, "persistence", "recency_frequency", "bg_nbd", "pareto_nbd"}
    assert report.metrics["ensemble"]["roc_auc"] > 0.55  # learned something, on a small history
    assert report.metrics["ensemble"]["rows"] == report.rows["test"] > 0
    summary = report.summary()
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["best_baseline"] in report.baselines
    assert summary["best_baseline_auc"] == max(round(report.metrics[b]["roc_auc"], 4) for b in report.baselines)
    assert summary["best_f1_baseline_macro_f1"] == max(round(report.metrics[b]["macro_f1"], 4)
                                                       for b in report.baselines)
    assert summary["best_f1_baseline_macro_f1"] == round(report.metrics[summary["best_f1_baseline"]]["macro_f1"], 4)
    json.dumps(summary, allow_nan=False)

    client = registry.client(settings)  # the user's MLflow store, not the scratch directory's
    run = client.get_run(report.run_id)
    assert client.get_experiment(run.info.experiment_id).name == f"{settings.mlflow.experiment}-backtest"
    assert run.data.params["target"] == "change"
    assert run.data.metrics["bg_nbd_roc_auc"] == pytest.approx(report.metrics["bg_nbd"]["roc_auc"])
    artifacts = {a.path for a in client.list_artifacts(report.run_id, "evaluation")}
    assert "evaluation/comparison.md" in artifacts
    assert any(a.path == "plots/roc_curves.png" for a in client.list_artifacts(report.run_id, "plots"))
    assert client.search_model_versions(f"name='{settings.mlflow.registered_model}'") == []  # nothing registered
    # the scratch store holds the backfilled states of exactly the valid customers, and the user's store nothing
    offline = FeatureWriter.open(backtest_settings(settings, tmp_path / "work", 30)).offline_dir
    rows = pd.read_parquet(list(offline.glob("*.parquet")), columns=[ENTITY_KEY])
    assert rows[ENTITY_KEY].nunique() == report.customers
    assert "c-broken" not in set(rows[ENTITY_KEY])
    assert not list(FeatureWriter.open(settings).offline_dir.glob("*.parquet")) or \
        pd.read_parquet(FeatureWriter.open(settings).offline_dir).empty
    mlflow.end_run()


def test_the_active_target_from_the_command_line(ledger: Path, settings: Settings, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`activity backtest --target active`: two classes, every baseline, the JSON line last."""
    from activity.cli import app
    from model_contract import registry

    monkeypatch.setenv("ACTIVITY_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ACTIVITY_SPARK__MASTER", "local[2]")
    result = CliRunner().invoke(app, ["backtest", str(ledger), "--customer", "client", "--time", "when",
                                      "--amount", "value", "--target", "active", "--horizon-days", "30",
                                      "--work-dir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["target"] == "active" and summary["horizon_days"] == 30
    assert summary["model_auc"] > 0.7 and summary["bgnbd_auc"] > 0.6  # who buys again is learnable here
    assert summary["best_baseline"] in {"persistence", "recency_frequency", "bg_nbd", "pareto_nbd"}
    client = registry.client(settings)
    run = client.search_runs([client.get_experiment_by_name(f"{settings.mlflow.experiment}-backtest")
                              .experiment_id], "params.target = 'active'")[0]
    assert "f1_inactive" in run.data.metrics and "f1_decline" not in run.data.metrics
    assert run.data.metrics["bg_nbd_roc_auc"] == pytest.approx(summary["bgnbd_auc"], abs=1e-4)
    # predicted purchase counts against the actual ones: BG/NBD's, the hybrid's and persistence's
    for name in ("bg_nbd", "pareto_nbd", "hybrid", "persistence"):
        assert run.data.metrics[f"{name}_count_mae"] >= 0
        assert run.data.metrics[f"{name}_count_spearman"] > 0.2, name
    assert "Spearman" in result.output and "purchases in the horizon" in result.output
    # the forecast `activity train run` registers for the scorer, fitted and measured the same way
    assert run.data.tags["forecast_model"] in {"bg_nbd", "pareto_nbd"} and "the scorer's forecast" in result.output
    assert 0.6 < run.data.metrics["forecast_test_roc_auc"] <= 1.0 and run.data.metrics["forecast_test_count_mae"] >= 0


def test_the_command_names_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from activity.cli import app

    monkeypatch.setenv("ACTIVITY_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    missing = runner.invoke(app, ["backtest", str(tmp_path / "nothing.csv")])
    assert missing.exit_code == 1
    assert "nothing.csv: no such file" in missing.output
    horizon = runner.invoke(app, ["backtest", str(tmp_path / "nothing.csv"), "--horizon-days", "0"])
    assert horizon.exit_code == 1
    assert "--horizon-days must be between 1 and 365" in horizon.output
    unknown = runner.invoke(app, ["backtest", str(tmp_path / "x.csv"), "--target", "churn"])
    assert unknown.exit_code == 2
