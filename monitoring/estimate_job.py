"""`activity monitor estimate`: the quality of today's answers, estimated before their labels arrive.

Answers: the scorer's, read back from the prediction log (the last ``monitoring.drift_window_hours``;
answers of a registered version only, not shadow scores or fallbacks, the latest per customer,
day, version and arm), or, when too few were logged (``auto``) or on request (``snapshot``),
the champion's own answers for every stored customer as of the newest state. Per model version
and A/B arm: the CBPE estimate (``monitoring.estimate``) of the probabilities read through the
version's calibration map (``monitoring.calibration``). Figures go to Prometheus, an MLflow run
of the monitoring experiment (``job=estimate``) and, when the champion's estimated ROC-AUC falls
more than ``monitoring.estimate_alert_auc_drop`` below its test ROC-AUC, the alert webhook.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from activity_settings import ActivityError, Settings
from model_contract.labels import CLASSES
from monitoring import metrics
from monitoring.alerts import Alert, notify
from monitoring.calibration import load_map
from monitoring.estimate import Estimate, estimate, estimate_alert

log = logging.getLogger(__name__)

PROBABILITIES = [f"p_{name}" for name in CLASSES]
KEY = ["customer_id", "as_of_day", "model_version", "arm"]
GAUGES = ("roc_auc", "roc_auc_low", "roc_auc_high", "macro_f1", "macro_f1_low", "macro_f1_high", "accuracy")
TEST_METRIC = "roc_auc"  # the ensemble's test-window ROC-AUC, logged unprefixed by the training run


class EstimateJobError(ActivityError, RuntimeError):
    """An estimate run cannot start (no answers, no champion); the message says what to do."""


@dataclass(frozen=True)
class GroupEstimate:
    version: str
    arm: str
    estimate: Estimate
    test_roc_auc: float | None
    calibration_rows: int  # matured answers behind the calibration map (0: the champion's own calibration)


@dataclass(frozen=True)
class EstimateReport:
    source: str
    detail: str
    groups: tuple[GroupEstimate, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # "v3/challenger" -> answers (too few)
    alerts: tuple[Alert, ...] = ()
    alerts_delivered: bool = True
    run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "detail": self.detail, "skipped": self.skipped,
                "groups": [{"version": g.version, "arm": g.arm, "rows": g.estimate.rows,
                            "test_roc_auc": g.test_roc_auc, "calibration_rows": g.calibration_rows,
                            "confusion": g.estimate.confusion.round(2).tolist(), **g.estimate.values()}
                           for g in self.groups],
                "alerts": [{"name": a.name, "summary": a.summary} for a in self.alerts], "run_id": self.run_id}


def logged_answers(predictions: pd.DataFrame) -> pd.DataFrame:
    """The answers a version gave (no shadow scores, fallbacks or incomplete records), the latest per key."""
    frame = predictions[~predictions["shadow"].fillna(False).astype(bool)]
    by_model = (frame["model_version"].notna() & frame["arm"].notna()
                & ~frame["degraded"].fillna(False).astype(bool))
    complete = np.isfinite(frame[PROBABILITIES].to_numpy(dtype=np.float64)).all(axis=1)
    frame = frame[by_model & complete].copy()
    frame["model_version"] = frame["model_version"].astype(str)
    frame["as_of_day"] = (frame["as_of"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(days=1)
    return frame.sort_values("logged_at", kind="stable").drop_duplicates(KEY, keep="last")


def estimate_groups(answers: pd.DataFrame, settings: Settings, test_figures: dict[str, float | None]
                    ) -> tuple[list[GroupEstimate], dict[str, int]]:
    """The estimate of each ``(model_version, arm)`` with enough answers; the others counted as skipped."""
    groups, skipped = [], {}
    directory = calibration_dir(settings)
    for (version, arm), rows in answers.groupby(["model_version", "arm"], sort=True):
        if len(rows) < settings.monitoring.estimate_min_rows:
            skipped[f"v{version}/{arm}"] = len(rows)
            continue
        calibration = load_map(directory, str(version))
        probabilities = calibration.apply(rows[PROBABILITIES].to_numpy(dtype=np.float64))
        groups.append(GroupEstimate(str(version), str(arm), estimate(probabilities, rows["label"].to_numpy()),
                                    test_figures.get(str(version)), calibration.rows))
    return groups, skipped


def beside_realized(joined: pd.DataFrame, min_rows: int) -> dict[str, dict[str, float]]:
    """Per ``version/arm`` of matured answers (``monitoring.quality.matured``): what their probabilities promised.

    The CBPE estimate from the answers' own probabilities (not through today's calibration map,
    which may have been fit on these very outcomes), to set beside the realized figures.
    """
    out = {}
    for (version, arm), rows in joined.groupby(["model_version", "arm"], sort=True):
        if len(rows) < min_rows:
            continue
        figures = estimate(rows[PROBABILITIES].to_numpy(dtype=np.float64), rows["label"].to_numpy(), draws=0)
        out[f"{version}/{arm}"] = {"estimated_roc_auc": figures.roc_auc, "estimated_macro_f1": figures.macro_f1}
    return out


def calibration_dir(settings: Settings) -> Path:
    return settings.home / "monitoring" / "calibration"


def _answers_from_log(settings: Settings, now: datetime) -> tuple[pd.DataFrame, str]:
    from monitoring.predictions import read_predictions

    since = now - timedelta(hours=settings.monitoring.drift_window_hours)
    answers = logged_answers(read_predictions(settings.kafka, since=since))
    return answers, f"{len(answers):,} answers logged since {since:%Y-%m-%d %H:%M} UTC"


def _answers_from_snapshot(settings: Settings, champion: Any) -> tuple[pd.DataFrame, str]:
    from features.store import open_feature_store
    from model_contract.onnx_runner import OnnxScorer, as_matrix
    from monitoring.drift import current_from_snapshot

    current = current_from_snapshot(settings, open_feature_store(settings))
    if current is None:
        raise EstimateJobError("no customer in the offline store: stream some transactions first")
    scorer = OnnxScorer(champion.onnx_path)
    x = as_matrix(current.features)
    frame = pd.DataFrame(scorer.predict_proba(x), columns=PROBABILITIES)
    frame["label"] = scorer.predict(x)
    frame["model_version"], frame["arm"] = str(champion.version), "champion"
    return frame, f"the champion's answers for {current.detail}"


def run_estimate(settings: Settings, source: str | None = None, now: datetime | None = None) -> EstimateReport:
    """One estimate run: answers, CBPE per version and arm, Prometheus, MLflow, alert."""
    from model_contract.artifacts import CHAMPION
    from model_contract.registry import load_by_alias

    now = now or datetime.now(UTC)
    monitoring = settings.monitoring
    chosen = source or monitoring.drift_source
    answers, detail, used = pd.DataFrame(), "", "predictions"
    if chosen in ("auto", "predictions"):
        answers, detail = _answers_from_log(settings, now)
        if chosen == "predictions" and len(answers) < monitoring.estimate_min_rows:
            raise EstimateJobError(f"{detail}, fewer than monitoring.estimate_min_rows = "
                                   f"{monitoring.estimate_min_rows}: try --source snapshot")
    test_figures = version_test_figures(settings)
    if len(answers) < monitoring.estimate_min_rows:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="activity-estimate-") as tmp:
            champion = load_by_alias(settings, CHAMPION, Path(tmp))
            if champion is None:
                raise EstimateJobError(f"no `{CHAMPION}` version of {settings.mlflow.registered_model!r}: "
                                       "run `activity train run` first")
            answers, detail = _answers_from_snapshot(settings, champion)
        used = "snapshot"
    groups, skipped = estimate_groups(answers, settings, test_figures)
    champion_version = _champion_version(settings)
    alerts = tuple(alert for g in groups if g.version == champion_version for alert in [estimate_alert(
        g.estimate, g.version, g.arm, g.test_roc_auc, monitoring.estimate_alert_auc_drop, f"Answers: {detail}.")]
        if alert is not None)
    report = EstimateReport(used, detail, tuple(groups), skipped, alerts)
    export_gauges(report)
    metrics.write_textfile(settings, "estimate", metrics.ESTIMATE_METRICS)
    report = EstimateReport(used, detail, tuple(groups), skipped, alerts, notify(settings, list(alerts)),
                            log_run(settings, report, now))
    log.info("estimate: %d groups from the %s; run %s", len(groups), used, report.run_id)
    return report


def version_test_figures(settings: Settings) -> dict[str, float | None]:
    """Every registered version's test ROC-AUC (from its training run)."""
    from mlflow.exceptions import MlflowException

    from model_contract import registry

    client = registry.client(settings)
    try:
        versions = client.search_model_versions(f"name = '{settings.mlflow.registered_model}'")
    except MlflowException:
        return {}
    figures: dict[str, float | None] = {}
    for version in versions:
        if version.run_id is None:  # registered outside any run: no training figures
            figures[str(version.version)] = None
            continue
        value = client.get_run(version.run_id).data.metrics.get(TEST_METRIC)
        figures[str(version.version)] = None if value is None else float(value)
    return figures


def _champion_version(settings: Settings) -> str | None:
    from mlflow.exceptions import MlflowException

    from model_contract import registry
    from model_contract.artifacts import CHAMPION

    try:
        version = registry.client(settings).get_model_version_by_alias(settings.mlflow.registered_model,
                                                                        CHAMPION)
    except MlflowException:
        return None
    return str(version.version)


def export_gauges(report: EstimateReport) -> None:
    """The report on the ``activity_monitor_estimated_*`` gauges (groups of earlier runs removed)."""
    with warnings.catch_warnings():  # importing feast sets PROMETHEUS_MULTIPROC_DIR; these jobs are one process
        warnings.filterwarnings("ignore", "Clearing labels has not been implemented", UserWarning)
        metrics.ESTIMATED_QUALITY.clear()
        metrics.ESTIMATED_CLASS_SHARE.clear()
        metrics.ESTIMATE_ROWS.clear()
    for group in report.groups:
        values = group.estimate.values()
        for name in GAUGES:
            metrics.ESTIMATED_QUALITY.labels(group.version, group.arm, name).set(values[name])
        for name in CLASSES:
            metrics.ESTIMATED_CLASS_SHARE.labels(group.version, group.arm, name).set(group.estimate.share[name])
        metrics.ESTIMATE_ROWS.labels(group.version, group.arm).set(group.estimate.rows)
    metrics.ESTIMATE_LAST_RUN.set(time.time())


def log_run(settings: Settings, report: EstimateReport, now: datetime) -> str:
    """The report as a run of the monitoring experiment (``job=estimate``)."""
    import mlflow

    from model_contract.registry import experiment_id

    with mlflow.start_run(experiment_id=experiment_id(settings, metrics.monitoring_experiment(settings)),
                          run_name=f"estimate {now:%Y-%m-%d %H:%M}",
                          tags={"job": "estimate", "source": report.source,
                                "alerts": ",".join(a.name for a in report.alerts) or "none"}) as run:
        mlflow.log_params({"source": report.source, "answers": report.detail[:500],
                           "alert_auc_drop": settings.monitoring.estimate_alert_auc_drop})
        figures = {f"v{g.version}_{g.arm}_{name}": value for g in report.groups
                   for name, value in g.estimate.values().items() if np.isfinite(value)}
        mlflow.log_metrics({name.replace("-", "_"): value for name, value in figures.items()})
        mlflow.log_text(json.dumps(report.as_dict(), indent=2), "estimate/report.json")
        return run.info.run_id
