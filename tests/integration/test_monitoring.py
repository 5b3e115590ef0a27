"""Drift on the real stack: a shifted population is detected and alerted; the same length unshifted is not.

The simulated population streams through the real Spark job into Feast, a champion is trained
and registered in MLflow with its reference sample; then 4 more weeks stream, unshifted, and the
drift job runs; then 4 more weeks with grocery amounts x3 and a new channel mix, and it runs again.
Alerts go to a webhook receiver on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from prometheus_client import REGISTRY

from activity_settings import Settings
from monitoring.receiver import AlertReceiver
from tests.integration.conftest import isolated, training_settings

pytestmark = pytest.mark.integration

HISTORY_DAYS = 200
WINDOW_DAYS = 28
SHIFT = {"amount_factor": 3.0, "category": "grocery", "channel_mix": (0.1, 0.2, 0.3, 0.1, 0.3)}


@pytest.fixture(scope="module")
def receiver() -> Iterator[AlertReceiver]:
    with AlertReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def watched(kafka_stack: Settings, tmp_path_factory: pytest.TempPathFactory, receiver: AlertReceiver):
    """A population streamed for 200 days and a champion trained on it."""
    from streaming.simulator import make_population
    from training.pipeline import train

    settings = training_settings(isolated(kafka_stack, tmp_path_factory.mktemp("watched")))
    settings = settings.model_copy(update={
        "training": settings.training.model_copy(update={"reference_sample_rows": 2_000}),
        "monitoring": settings.monitoring.model_copy(update={
            "webhook_url": receiver.url, "drift_source": "snapshot", "retrain_on_drift": False}),
    })
    population = make_population(1_500, date(2026, 1, 1), HISTORY_DAYS + 2 * WINDOW_DAYS, seed=23)
    _stream_days(settings, population, 0, HISTORY_DAYS)
    outcome = train(settings)
    assert outcome.decision.alias == "champion"
    return settings, population


def _stream_days(settings: Settings, population, first: int, days: int) -> None:
    from streaming.publish import encode_simulated, publish_tables
    from streaming.runner import run_stream
    from streaming.simulator import simulate

    assert publish_tables(settings.kafka, simulate(population, first, days), encode_simulated).failed == 0
    run_stream(settings, until_idle_s=2.0)


def _gauge(name: str, labels: dict[str, str] | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


def test_a_shifted_population_is_detected_and_alerted_an_unshifted_one_is_not(watched, receiver: AlertReceiver) -> None:
    from mlflow import MlflowClient

    from model_contract.registry import tracking_uri
    from monitoring.drift import run_drift
    from streaming.simulator import Shift

    settings, population = watched
    _stream_days(settings, population, HISTORY_DAYS, WINDOW_DAYS)
    calm = run_drift(settings)
    assert not calm.figures.detected, calm.summary()
    assert calm.alerts == [] and receiver.bodies == []
    assert _gauge("activity_monitor_drift_detected") == 0

    shifted = population.shifted(Shift(from_day=HISTORY_DAYS + WINDOW_DAYS, **SHIFT))
    _stream_days(settings, shifted, HISTORY_DAYS + WINDOW_DAYS, WINDOW_DAYS)
    drifted = run_drift(settings)
    assert drifted.figures.detected, drifted.summary()
    assert drifted.figures.share >= settings.monitoring.drift_share_threshold > calm.figures.share
    # the channel mix moved: those features are among the drifted ones, and their PSI says so too
    assert {"share_in_store_90d", "share_other_90d"} <= set(drifted.figures.drifted)
    # the customers aged 4 weeks: tenure moves by construction, reported apart and never counted
    assert set(calm.figures.time_driven) == set(settings.monitoring.time_driven_features)
    assert not set(settings.monitoring.time_driven_features) & set(drifted.figures.drifted)
    assert 0 <= drifted.figures.weighted_share <= 1  # the champion logged its importances
    assert drifted.figures.psi["share_other_90d"] > 0.25 > calm.figures.psi["share_other_90d"]

    assert drifted.alerts_delivered and len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"]
    alert = body["alerts"][0]
    assert alert["labels"]["alertname"] == "ActivityFeatureDrift"
    assert alert["labels"]["model_version"] == drifted.model_version
    assert "share_other_90d" in alert["annotations"]["description"]
    assert alert["startsAt"].endswith("Z") and alert["fingerprint"]

    assert _gauge("activity_monitor_drift_detected") == 1
    assert _gauge("activity_monitor_drift_share") == pytest.approx(drifted.figures.share)
    assert _gauge("activity_monitor_feature_psi", {"feature": "share_other_90d"}) == pytest.approx(
        drifted.figures.psi["share_other_90d"])
    assert (settings.home / "monitoring" / "drift.prom").read_text().count("activity_monitor_drift_share") >= 1

    assert drifted.report_path.is_file() and drifted.report_path.stat().st_size > 10_000
    mlflow_client = MlflowClient(tracking_uri(settings))
    run = mlflow_client.get_run(drifted.run_id)
    assert run.data.metrics["drift_share"] == pytest.approx(drifted.figures.share)
    assert run.data.tags["job"] == "drift" and run.data.tags["model_version"] == drifted.model_version
    assert {a.path for a in mlflow_client.list_artifacts(drifted.run_id, "drift")} == {
        f"drift/{drifted.report_path.name}", "drift/figures.json"}


def test_the_champions_quality_is_estimated_exported_and_logged(watched) -> None:
    import subprocess
    import sys

    from model_contract.registry import client
    from monitoring.estimate_job import run_estimate
    from tests.conftest import settings_env

    settings, _ = watched
    report = run_estimate(settings, source="snapshot")
    (group,) = report.groups
    champion = client(settings).get_model_version_by_alias(settings.mlflow.registered_model, "champion")
    assert report.source == "snapshot" and group.version == str(champion.version) and group.arm == "champion"
    assert 0.5 < group.estimate.roc_auc < 1 and group.estimate.roc_auc in group.estimate.roc_auc_band
    assert group.test_roc_auc is not None and group.estimate.rows > 1_000
    assert _gauge("activity_monitor_estimated_quality", {"version": group.version, "arm": "champion",
                                                         "metric": "roc_auc"}) == pytest.approx(group.estimate.roc_auc)
    run = client(settings).get_run(report.run_id)
    assert run.data.tags["job"] == "estimate"
    assert run.data.metrics[f"v{group.version}_champion_roc_auc"] == pytest.approx(group.estimate.roc_auc)
    done = subprocess.run([sys.executable, "-m", "activity", "monitor", "estimate", "--source", "snapshot"],
                          env=settings_env(settings), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "CBPE" in done.stdout and "MLflow run" in done.stdout


def test_drift_starts_a_retraining_run_by_the_policy_once_per_interval(watched) -> None:
    from activity.retraining import drift_then_retrain
    from model_contract.registry import client

    settings, _ = watched
    name = settings.mlflow.registered_model
    before = {v.version for v in client(settings).search_model_versions(f"name='{name}'")}
    first = drift_then_retrain(settings, retrain=True)
    assert first.figures.detected and first.retrain is not None and first.retrain.startswith("done"), first.retrain
    after = {v.version for v in client(settings).search_model_versions(f"name='{name}'")}
    assert len(after - before) == 1
    champion = client(settings).get_model_version_by_alias(name, "champion").version
    second = drift_then_retrain(settings, retrain=True)
    if champion in after - before:
        # the new champion's reference is the shifted population: the drift is gone
        assert not second.figures.detected and second.retrain is None, second.summary()
    else:
        # the old champion stays: still drifted, but the policy waits out its interval
        assert second.figures.detected and second.retrain is not None
        assert second.retrain.startswith("not started"), second.retrain
    assert {v.version for v in client(settings).search_model_versions(f"name='{name}'")} == after


def test_the_cli_reports_drift_and_exits_cleanly(watched) -> None:
    import subprocess
    import sys

    from tests.conftest import settings_env

    settings, _ = watched
    done = subprocess.run([sys.executable, "-m", "activity", "monitor", "drift", "--source", "snapshot",
                           "--no-retrain"], env=settings_env(settings), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "features drifted" in done.stdout and "tenure_days" in done.stdout and "report:" in done.stdout
    exported = (settings.home / "monitoring" / "drift.prom").read_text()
    assert 'activity_monitor_feature_psi{feature="share_other_90d"}' in exported
    assert "activity_monitor_online_quality" not in exported
    bad = subprocess.run([sys.executable, "-m", "activity", "monitor", "drift", "--source", "yesterday"],
                         env=settings_env(settings), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "--source must be one of" in bad.stderr
