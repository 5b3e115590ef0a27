"""Prometheus metrics of the monitoring jobs (``activity_monitor_*``).

Served by ``activity monitor schedule`` on ``monitoring.metrics_port``; a one-off run also writes
its own job's metrics in the text format to ``<data_dir>/monitoring/<job>.prom`` (for a textfile
collector), so the two jobs' files never repeat a series.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

from activity_settings import Settings

DRIFT_SHARE = Gauge("activity_monitor_drift_share", "Share of features Evidently finds drifted in the last run.")
DRIFT_DETECTED = Gauge("activity_monitor_drift_detected", "1 when the last run found the dataset drifted.")
DRIFTED_FEATURES = Gauge("activity_monitor_drifted_features", "Features Evidently finds drifted in the last run.")
FEATURE_PSI = Gauge("activity_monitor_feature_psi", "Population stability index per feature (last run).",
                    ["feature"])
FEATURE_DRIFT_SCORE = Gauge("activity_monitor_feature_drift_score",
                            "Evidently's drift score per feature (last run; the method depends on the column).",
                            ["feature"])
PREDICTION_DRIFT_SCORE = Gauge("activity_monitor_prediction_drift_score",
                               "Evidently's drift score of the predicted activity score (last run).")
PREDICTION_DRIFT_DETECTED = Gauge("activity_monitor_prediction_drift_detected",
                                  "1 when the predicted activity score drifted (last run).")
DRIFT_ROWS = Gauge("activity_monitor_drift_current_rows", "Rows in the current window of the last drift run.")
DRIFT_LAST_RUN = Gauge("activity_monitor_drift_last_run_timestamp_seconds", "When the last drift run finished.")
DRIFT_RUNS = Counter("activity_monitor_drift_runs_total", "Drift runs, by outcome.", ["outcome"])

QUALITY = Gauge("activity_monitor_online_quality", "Online quality of matured predictions per model version, arm "
                "and metric (macro_f1, precision, recall, accuracy, roc_auc).", ["version", "arm", "metric"])
QUALITY_SAMPLES = Gauge("activity_monitor_online_quality_samples", "Matured predictions per model version and arm.",
                        ["version", "arm"])
QUALITY_ARM_P_VALUE = Gauge("activity_monitor_online_quality_arm_p_value",
                            "p-value of the test between the A/B arms' accuracies (last run).")
QUALITY_LAST_RUN = Gauge("activity_monitor_quality_last_run_timestamp_seconds",
                         "When the last online-quality run finished.")

ESTIMATED_QUALITY = Gauge("activity_monitor_estimated_quality", "Quality of the latest answers estimated from the "
                          "calibrated probabilities (CBPE) per model version, arm and metric (roc_auc, macro_f1, "
                          "accuracy; *_low / *_high: the 95 % band).", ["version", "arm", "metric"])
ESTIMATED_CLASS_SHARE = Gauge("activity_monitor_estimated_class_share",
                              "Expected share of each realized class among the latest answers.",
                              ["version", "arm", "class_name"])
ESTIMATE_ROWS = Gauge("activity_monitor_estimate_answers", "Answers behind each estimate.", ["version", "arm"])
ESTIMATE_LAST_RUN = Gauge("activity_monitor_estimate_last_run_timestamp_seconds",
                          "When the last estimate run finished.")
CALIBRATION_ECE = Gauge("activity_monitor_calibration_ece", "Top-label expected calibration error on matured answers, "
                        "of the raw probabilities and through the monitor's calibration map.",
                        ["version", "probabilities"])
CALIBRATION_ROWS = Gauge("activity_monitor_calibration_answers", "Matured answers the calibration map was fit on.",
                         ["version"])
WEIGHTED_DRIFT_SHARE = Gauge("activity_monitor_weighted_drift_share", "Share of the model's feature importance that "
                             "drifted (time-driven features left out; last run).")
TIME_DRIVEN_DRIFT = Gauge("activity_monitor_time_driven_feature_drifted", "1 when a feature that grows with time by "
                          "construction drifted (reported apart, not counted in the share).", ["feature"])

ALERTS_SENT = Counter("activity_monitor_alerts_sent_total", "Alerts posted to the webhook, per alert name.",
                      ["alertname"])
ALERT_FAILURES = Counter("activity_monitor_alert_failures_total", "Alerts the webhook did not accept.")
RETRAINS = Counter("activity_monitor_retrain_runs_total", "Training runs started by the drift policy, by outcome.",
                   ["outcome"])


DRIFT_METRICS = (DRIFT_SHARE, DRIFT_DETECTED, DRIFTED_FEATURES, FEATURE_PSI, FEATURE_DRIFT_SCORE,
                 PREDICTION_DRIFT_SCORE, PREDICTION_DRIFT_DETECTED, DRIFT_ROWS, DRIFT_LAST_RUN, DRIFT_RUNS, RETRAINS,
                 WEIGHTED_DRIFT_SHARE, TIME_DRIVEN_DRIFT)
QUALITY_METRICS = (QUALITY, QUALITY_SAMPLES, QUALITY_ARM_P_VALUE, QUALITY_LAST_RUN)
ESTIMATE_METRICS = (ESTIMATED_QUALITY, ESTIMATED_CLASS_SHARE, ESTIMATE_ROWS, ESTIMATE_LAST_RUN)


def write_textfile(settings: Settings, job: str, collectors: Iterable[object]) -> Path:
    """``collectors`` in the Prometheus text format at ``<data_dir>/monitoring/<job>.prom`` (atomically replaced)."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    path = settings.home / "monitoring" / f"{job}.prom"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path


def monitoring_experiment(settings: Settings) -> str:
    """The MLflow experiment of the monitoring jobs' runs."""
    return f"{settings.mlflow.experiment}-monitoring"
