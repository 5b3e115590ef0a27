"""Drift pieces without the stack: the comparison, PSI bins, alerts, the retraining policy, the webhook payload."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY

from activity_settings import MonitoringSettings, load_settings
from features.transform import FEATURE_NAMES
from model_contract.reference import bin_edges, bin_shares, psi, reference_statistics
from monitoring.alerts import Alert, notify, payload
from monitoring.drift import DriftFigures, compare, drift_alerts, should_retrain
from monitoring.drift_share import TIME_DRIVEN
from training.reference import reference_entities

SHIFTED = list(FEATURE_NAMES[:10])


def population(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.gamma(2.0, 1.0 + k / 10, rows) for k, name in enumerate(FEATURE_NAMES)})
    for name in SHIFTED:
        frame[name] = frame[name] * (1.0 + shift)
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return population(4_000, seed=1)


def _compare(reference: pd.DataFrame, current: pd.DataFrame) -> DriftFigures:
    score = lambda frame: np.tanh(frame["tx_count_7d"].to_numpy() - 2)  # noqa: E731 - a stand-in model
    return compare(reference, current, score(reference), score(current), reference_statistics(reference), 0.3)


def test_a_sample_of_the_same_population_does_not_drift(reference: pd.DataFrame) -> None:
    figures = _compare(reference, population(3_000, seed=2))
    assert not figures.detected and figures.drifted == [] and figures.share == 0
    assert not figures.prediction_detected
    assert max(figures.psi.values()) < 0.05
    assert set(figures.scores) == set(FEATURE_NAMES) and figures.current_rows == 3_000


def test_shifted_features_are_the_drifted_ones_and_the_dataset_drifts(reference: pd.DataFrame) -> None:
    figures = _compare(reference, population(3_000, seed=2, shift=0.5))
    assert figures.drifted == SHIFTED
    assert figures.share == pytest.approx(len(SHIFTED) / (len(FEATURE_NAMES) - len(TIME_DRIVEN)))  # those apart
    assert figures.time_driven == dict.fromkeys(TIME_DRIVEN, False)
    assert figures.detected and figures.prediction_detected
    assert all(figures.psi[name] > 0.1 for name in SHIFTED)
    assert all(figures.psi[name] < 0.05 for name in FEATURE_NAMES if name not in SHIFTED)


def test_an_ageing_population_drifts_in_tenure_alone_and_that_is_not_counted(reference: pd.DataFrame) -> None:
    aged = population(3_000, seed=2).assign(tenure_days=lambda f: f["tenure_days"] + 60)
    importances = {name: 1.0 for name in FEATURE_NAMES}
    score = lambda frame: np.tanh(frame["tx_count_7d"].to_numpy() - 2)  # noqa: E731 - a stand-in model
    figures = compare(reference, aged, score(reference), score(aged), reference_statistics(reference), 0.3,
                      importances=importances)
    assert figures.time_driven == {"tenure_days": True} | dict.fromkeys(TIME_DRIVEN[1:], False)
    assert figures.drifted == [] and figures.share == 0 and figures.weighted_share == 0 and not figures.detected
    alerts = drift_alerts(_compare(reference, population(3_000, seed=2, shift=0.5).assign(
        tenure_days=lambda f: f["tenure_days"] + 60)), MonitoringSettings(), "3", "snapshot")
    assert "tenure_days" not in alerts[0].summary and "Time-driven, not counted: tenure_days" in alerts[0].description


def test_psi_sees_a_mass_of_zeros_move() -> None:
    reference = np.zeros(1_000)
    edges = bin_edges(reference)
    current = np.r_[np.zeros(500), np.full(500, 0.3)]
    assert psi(bin_shares(reference, edges), bin_shares(current, edges)) > 1.0
    assert psi(bin_shares(reference, edges), bin_shares(np.zeros(300), edges)) == 0


def test_the_reference_snapshot_stands_at_the_start_of_the_last_day() -> None:
    daily = pd.DataFrame({"customer_id": ["a", "b", "a", "c"], "day": [20_000, 20_001, 20_005, 20_003],
                          "count": [1, 2, 1, 1]})
    entities = reference_entities(daily, rows=10, seed=0)
    assert entities["customer_id"].tolist() == ["a", "b", "c"]
    assert (entities["event_timestamp"] == pd.Timestamp(20_005 * 86_400, unit="s", tz="UTC")).all()
    assert len(reference_entities(daily, rows=2, seed=0)) == 2


def _figures(detected: bool, prediction: bool = False) -> DriftFigures:
    psi_values = {name: (0.8 if name in SHIFTED else 0.01) for name in FEATURE_NAMES}
    return DriftFigures(share=0.42 if detected else 0.04, detected=detected, drifted=SHIFTED if detected else [],
                        scores=dict.fromkeys(FEATURE_NAMES, 0.0), methods=dict.fromkeys(FEATURE_NAMES, "psi"),
                        psi=psi_values, prediction_score=0.3 if prediction else 0.01, prediction_method="psi",
                        prediction_detected=prediction, reference_rows=100, current_rows=100)


def test_alerts_name_the_drifted_features_and_their_psi() -> None:
    monitoring = MonitoringSettings()
    assert drift_alerts(_figures(False), monitoring, "3", "snapshot") == []
    [alert] = drift_alerts(_figures(True), monitoring, "3", "snapshot")
    assert alert.name == "ActivityFeatureDrift" and alert.labels == {"model_version": "3", "source": "snapshot"}
    assert SHIFTED[0] in alert.description and "0.80" in alert.description
    names = [a.name for a in drift_alerts(_figures(True, prediction=True), monitoring, "3", "predictions")]
    assert names == ["ActivityFeatureDrift", "ActivityPredictionDrift"]


def test_the_retraining_policy_waits_out_its_interval() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    on = MonitoringSettings(retrain_on_drift=True, retrain_min_interval_h=24)
    assert should_retrain(True, None, now, on)
    assert not should_retrain(False, None, now, on)
    assert not should_retrain(True, now - timedelta(hours=23), now, on)
    assert should_retrain(True, now - timedelta(hours=24), now, on)
    assert not should_retrain(True, None, now, on.model_copy(update={"retrain_on_drift": False}))


def test_the_webhook_payload_is_alertmanagers() -> None:
    started = datetime(2026, 5, 1, 12, tzinfo=UTC)
    alerts = [Alert("ActivityFeatureDrift", "10 features drifted", "details", labels={"model_version": "3"},
                    starts_at=started)]
    body = payload(alerts)
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "activity-monitor"
    assert body["groupLabels"] == {"alertname": "ActivityFeatureDrift"}
    assert body["commonLabels"]["model_version"] == "3"
    [item] = body["alerts"]
    assert item["startsAt"] == "2026-05-01T12:00:00Z" and item["endsAt"] == "0001-01-01T00:00:00Z"
    assert item["annotations"] == {"summary": "10 features drifted", "description": "details"}
    assert item["fingerprint"] == alerts[0].fingerprint() and len(item["fingerprint"]) == 16


def test_a_webhook_that_does_not_answer_is_counted_not_raised(tmp_path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings(data_dir=tmp_path, monitoring={"webhook_url": f"http://127.0.0.1:{port}/",
                                                           "webhook_timeout_s": 1.0})
    before = REGISTRY.get_sample_value("activity_monitor_alert_failures_total") or 0.0
    assert not notify(settings, [Alert("ActivityFeatureDrift", "s", "d")])
    assert REGISTRY.get_sample_value("activity_monitor_alert_failures_total") == before + 1
    assert notify(settings, [])
    assert notify(load_settings(data_dir=tmp_path), [Alert("ActivityFeatureDrift", "s", "d")])  # no webhook: logged
