"""`activity monitor drift`: does the model see now what it was trained on?

Reference: the training sample logged with the champion (``reference/features.parquet`` and the
PSI bins in ``reference/statistics.json``). Current: the features of the customers scored in the
last window (read back from the prediction log, then retrieved point-in-time from Feast) or, with
no recent predictions, the latest offline snapshot of every customer. Both go through THE
transform, so a difference is a difference in the population, not in code.

Evidently tests each feature (its method per column type and size: Wasserstein distance for
numerical columns of this size) and the predicted activity score; PSI is computed over the
reference's decile bins. The HTML report is saved and logged to MLflow; the figures go to
Prometheus; alerts go to the webhook; and, by the policy in settings, the outcome carries a
decision to retrain, which whoever schedules the job acts on (``activity.retraining``): this
module never starts a training run itself.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import ValueDrift
from evidently.presets import DataDriftPreset

from activity_settings import ActivityError, MonitoringSettings, Settings
from features.repo import OFFLINE_DIR
from features.state import ENTITY_KEY, EVENT_TIMESTAMP
from features.store import historical_features, open_feature_store, repo_dir
from features.transform import FEATURE_NAMES
from model_contract import registry
from model_contract.artifacts import CHAMPION, REFERENCE_DIR, REFERENCE_FEATURES, REFERENCE_STATISTICS
from model_contract.labels import CLASSES
from model_contract.onnx_runner import OnnxScorer, as_matrix
from model_contract.reference import bin_shares, psi
from monitoring import metrics
from monitoring.alerts import Alert, notify
from monitoring.drift_share import TIME_DRIVEN, drift_shares
from monitoring.predictions import read_predictions

SCORE = "activity_score"  # p(growth) - p(decline): the prediction whose drift is watched
SOURCES = ("predictions", "snapshot")


class DriftError(ActivityError):
    """A drift run cannot start (no champion, no reference, no current data); the message says why."""


@dataclass(frozen=True)
class Reference:
    model_name: str
    model_version: str
    run_id: str
    onnx_path: Path
    features: pd.DataFrame
    statistics: dict[str, Any]
    importances: dict[str, float] | None = None  # None: a version trained before they were logged


@dataclass(frozen=True)
class Current:
    features: pd.DataFrame  # FEATURE_NAMES columns
    source: str  # "predictions" | "snapshot"
    as_of: datetime  # the newest as_of in the window
    detail: str


@dataclass(frozen=True)
class DriftFigures:
    """What one comparison found; pure data, no I/O."""

    share: float
    detected: bool
    drifted: list[str]
    scores: dict[str, float]
    methods: dict[str, str]
    psi: dict[str, float]
    prediction_score: float
    prediction_method: str
    prediction_detected: bool
    reference_rows: int
    current_rows: int
    weighted_share: float = float("nan")  # share of the model's importance that drifted
    time_driven: dict[str, bool] = field(default_factory=dict)  # reported apart, never in the shares

    def high_psi(self, threshold: float) -> dict[str, float]:
        return {name: value for name, value in self.psi.items() if value >= threshold}


@dataclass(frozen=True)
class RetrainDecision:
    """What the drift -> retraining policy asks of the scheduler: start a run or not, and why."""

    start: bool
    reason: str


@dataclass(frozen=True)
class DriftOutcome:
    figures: DriftFigures
    source: str
    as_of: datetime
    model_version: str
    report_path: Path
    run_id: str | None
    alerts: list[Alert] = field(default_factory=list)
    alerts_delivered: bool = True
    decision: RetrainDecision | None = None  # None: no drift, nothing to decide
    retrain: str | None = None  # what came of the decision: a one-line account (the scheduler's, once it acted)
    seconds: float = 0.0

    def summary(self) -> str:
        f = self.figures
        state = "DRIFT" if f.detected else "no drift"
        counted = len(f.scores) - len(f.time_driven)
        return (f"{state}: {len(f.drifted)}/{counted} features drifted (share {f.share:.2f}, importance-weighted "
                f"{f.weighted_share:.2f}; time-driven apart: "
                f"{', '.join(n for n, moved in f.time_driven.items() if moved) or 'none drifted'}), "
                f"prediction drift {'yes' if f.prediction_detected else 'no'} "
                f"(score {f.prediction_score:.3f}); {f.current_rows:,} current rows from the {self.source} "
                f"vs {f.reference_rows:,} reference rows of model v{self.model_version}")


# --------------------------------------------------------------------------- pure comparison


def _drifted(method: str, value: float, threshold: float) -> bool:
    """Evidently's rule: p-value methods drift below the threshold, distances at or above it."""
    return value < threshold if "p_value" in method else value >= threshold


def compare(reference: pd.DataFrame, current: pd.DataFrame, reference_scores: np.ndarray,
            current_scores: np.ndarray, statistics: dict[str, Any], drift_share: float,
            html_path: Path | None = None, method: str | None = None, threshold: float | None = None,
            time_driven: Collection[str] = TIME_DRIVEN, importances: Mapping[str, float] | None = None
            ) -> DriftFigures:
    """Evidently data drift over FEATURE_NAMES and value drift of the activity score; PSI per feature.

    The drifted share is ours, not Evidently's (``monitoring.drift_share``): time-driven features
    apart, over the features the model uses, unweighted (which decides) and importance-weighted.
    """
    columns = list(FEATURE_NAMES)
    definition = DataDefinition(numerical_columns=[*columns, SCORE])
    ref = reference[columns].astype(np.float64).assign(**{SCORE: reference_scores})
    cur = current[columns].astype(np.float64).assign(**{SCORE: current_scores})
    report = Report([DataDriftPreset(columns=columns, drift_share=drift_share, method=method, threshold=threshold),
                     ValueDrift(column=SCORE, method=method, threshold=threshold)])
    snapshot = report.run(current_data=Dataset.from_pandas(cur, data_definition=definition),
                          reference_data=Dataset.from_pandas(ref, data_definition=definition))
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    scores: dict[str, float] = {}
    methods: dict[str, str] = {}
    thresholds: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            scores[config["column"]] = float(metric["value"])
            methods[config["column"]] = str(config.get("method"))
            thresholds[config["column"]] = float(config.get("threshold"))
    shares = drift_shares({c: _drifted(methods[c], scores[c], thresholds[c]) for c in columns}, importances,
                          time_driven)
    return DriftFigures(
        share=shares.unweighted,
        detected=shares.unweighted >= drift_share,
        drifted=list(shares.drifted),
        scores={c: scores[c] for c in columns},
        methods={c: methods[c] for c in columns},
        psi=psi_by_feature(statistics, current),
        prediction_score=scores[SCORE],
        prediction_method=methods[SCORE],
        prediction_detected=_drifted(methods[SCORE], scores[SCORE], thresholds[SCORE]),
        reference_rows=len(reference),
        current_rows=len(current),
        weighted_share=shares.weighted,
        time_driven=shares.time_driven,
    )


def psi_by_feature(statistics: dict[str, Any], current: pd.DataFrame) -> dict[str, float]:
    """PSI of each feature over the reference's bins (logged with the model)."""
    result = {}
    for name in FEATURE_NAMES:
        reference = statistics["features"][name]
        edges = np.asarray(reference["psi_edges"], dtype=np.float64)
        values = current[name].to_numpy(dtype=np.float64)
        result[name] = psi(np.asarray(reference["psi_shares"]), bin_shares(values, edges))
    return result


def drift_alerts(figures: DriftFigures, monitoring: MonitoringSettings, model_version: str, source: str
                 ) -> list[Alert]:
    """The alerts a comparison raises: dataset drift (naming the features, with their PSI) and prediction drift.

    A single feature with a high PSI is a Prometheus rule (``FeaturePsiHigh``), not a job alert:
    one feature moving (a customer base ageing moves tenure) is worth a look, not a page.
    """
    labels = {"model_version": model_version, "source": source}
    alerts = []
    if figures.detected:
        shown = ", ".join(figures.drifted[:8]) + (" …" if len(figures.drifted) > 8 else "")
        high = sorted(((name, value) for name, value in figures.high_psi(monitoring.psi_threshold).items()
                       if name not in figures.time_driven), key=lambda item: -item[1])[:8]
        counted = len(figures.scores) - len(figures.time_driven)
        apart = [name for name, moved in figures.time_driven.items() if moved]
        alerts.append(Alert(
            "ActivityFeatureDrift",
            f"{len(figures.drifted)} of {counted} features drifted (share {figures.share:.2f} "
            f">= {monitoring.drift_share_threshold}; importance-weighted {figures.weighted_share:.2f})",
            f"Drifted: {shown}. PSI >= {monitoring.psi_threshold}: "
            + (", ".join(f"{name} {value:.2f}" for name, value in high) or "none")
            + (f". Time-driven, not counted: {', '.join(apart)}" if apart else "")
            + f". Current: {figures.current_rows} rows from the {source}; reference: "
            f"{figures.reference_rows} rows of model v{model_version}.",
            severity="warning", labels=labels))
    if figures.prediction_detected:
        alerts.append(Alert(
            "ActivityPredictionDrift",
            f"predicted activity score drifted ({figures.prediction_method} {figures.prediction_score:.3f})",
            "The distribution of p(growth) - p(decline) on current features differs from the reference's.",
            severity="warning", labels=labels))
    return alerts


def should_retrain(detected: bool, last_triggered: datetime | None, now: datetime,
                   monitoring: MonitoringSettings) -> bool:
    """The drift -> retraining policy: on, drifted, and not within the minimum interval of the last one."""
    if not (monitoring.retrain_on_drift and detected):
        return False
    return last_triggered is None or now - last_triggered >= timedelta(hours=monitoring.retrain_min_interval_h)


# --------------------------------------------------------------------------- reference and current


def load_reference(settings: Settings, workdir: Path) -> Reference:
    """The champion's training reference (sample and statistics) and its ONNX model."""
    model = registry.load_by_alias(settings, CHAMPION, workdir / "models")
    if model is None:
        raise DriftError(f"no `{CHAMPION}` version of {settings.mlflow.registered_model!r} in the registry: "
                         "run `activity train run` first")
    if model.run_id is None:
        raise DriftError(f"model v{model.version} has no training reference: it was registered outside any run")
    target = workdir / "reference" / model.version
    target.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(registry.client(settings).download_artifacts(model.run_id, REFERENCE_DIR, str(target)))
    except Exception as exc:  # MLflow raises several types for a missing artifact
        raise DriftError(f"model v{model.version} has no training reference in run {model.run_id}: {exc}") from exc
    features = pd.read_parquet(local / REFERENCE_FEATURES)
    statistics = json.loads((local / REFERENCE_STATISTICS).read_text())
    importances_path = local / "importances.json"
    importances = json.loads(importances_path.read_text()) if importances_path.exists() else None
    return Reference(model.name, model.version, model.run_id, model.onnx_path, features, statistics, importances)


def current_from_predictions(settings: Settings, store: Any, since: datetime) -> Current | None:
    """Features of the customers answered since ``since``, as of their (latest) request time."""
    logged = read_predictions(settings.kafka, since=since)
    logged = logged[~logged["shadow"]]
    if logged.empty:
        return None
    latest = logged.sort_values("as_of").groupby("customer_id", sort=False).tail(1)
    if len(latest) > settings.monitoring.drift_max_rows:
        latest = latest.sample(settings.monitoring.drift_max_rows, random_state=0)
    entities = pd.DataFrame({ENTITY_KEY: latest["customer_id"].to_numpy(),
                             EVENT_TIMESTAMP: latest["as_of"].to_numpy()})
    features = historical_features(store, entities)
    return Current(features[list(FEATURE_NAMES)].reset_index(drop=True), "predictions",
                   latest["as_of"].max().to_pydatetime(),
                   f"{len(logged):,} answers since {since:%Y-%m-%d %H:%M} UTC, {len(latest):,} customers")


def current_from_snapshot(settings: Settings, store: Any) -> Current | None:
    """Every stored customer (sampled to ``drift_max_rows``) as of the newest state in the offline store."""
    offline = repo_dir(settings) / OFFLINE_DIR
    if not offline.is_dir():
        return None
    keys = ds.dataset(offline, format="parquet").to_table(columns=[ENTITY_KEY, EVENT_TIMESTAMP]).to_pandas()
    if keys.empty:
        return None
    as_of = pd.to_datetime(keys[EVENT_TIMESTAMP], utc=True).max()
    customers = pd.Series(keys[ENTITY_KEY].unique())
    if len(customers) > settings.monitoring.drift_max_rows:
        customers = customers.sample(settings.monitoring.drift_max_rows, random_state=0)
    entities = pd.DataFrame({ENTITY_KEY: customers.to_numpy(), EVENT_TIMESTAMP: as_of})
    features = historical_features(store, entities)
    return Current(features[list(FEATURE_NAMES)].reset_index(drop=True), "snapshot", as_of.to_pydatetime(),
                   f"{len(entities):,} customers as of {as_of:%Y-%m-%d %H:%M} UTC (offline store)")


def current_window(settings: Settings, source: str, now: datetime) -> Current:
    """The current rows by ``source`` (``auto``: predictions when there are enough, else the snapshot)."""
    store = open_feature_store(settings)
    monitoring = settings.monitoring
    current: Current | None = None
    if source in ("auto", "predictions"):
        current = current_from_predictions(settings, store, now - timedelta(hours=monitoring.drift_window_hours))
        if source == "predictions" and (current is None or len(current.features) < monitoring.drift_min_rows):
            found = 0 if current is None else len(current.features)
            raise DriftError(f"{found} customers were scored in the last {monitoring.drift_window_hours:g} h "
                             f"(monitoring.drift_min_rows = {monitoring.drift_min_rows}); "
                             "try --source snapshot")
        if current is not None and len(current.features) < monitoring.drift_min_rows:
            current = None
    if current is None:
        current = current_from_snapshot(settings, store)
    if current is None or len(current.features) < monitoring.drift_min_rows:
        found = 0 if current is None else len(current.features)
        raise DriftError(f"only {found} current rows (monitoring.drift_min_rows = {monitoring.drift_min_rows}): "
                         "stream some transactions first")
    return current


def activity_scores(onnx_path: Path, features: pd.DataFrame) -> np.ndarray:
    """The model's activity score per row (the same ONNX graph the scorer runs)."""
    probabilities = OnnxScorer(onnx_path).predict_proba(as_matrix(features[list(FEATURE_NAMES)]))
    return probabilities[:, CLASSES.index("growth")] - probabilities[:, CLASSES.index("decline")]


# --------------------------------------------------------------------------- the job


def reports_dir(settings: Settings) -> Path:
    return settings.home / "monitoring" / "reports"


def _state_path(settings: Settings) -> Path:
    return settings.home / "monitoring" / "state.json"


def _read_state(settings: Settings) -> dict[str, Any]:
    path = _state_path(settings)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)


def run_drift(settings: Settings, source: str | None = None, now: datetime | None = None,
              retrain: bool | None = None, progress: Any = lambda _step: None) -> DriftOutcome:
    """One drift run: compare, report (HTML, MLflow, Prometheus), alert, and decide on retraining by the policy.

    ``retrain`` overrides ``monitoring.retrain_on_drift`` (None: the setting). The outcome's
    ``decision`` says whether a training run should start; starting it is the caller's.
    """
    started = time.monotonic()
    now = now or datetime.now(UTC)
    monitoring = settings.monitoring
    chosen = source or monitoring.drift_source
    with tempfile.TemporaryDirectory(prefix="activity-drift-") as tmp:
        progress("loading the champion's training reference")
        reference = load_reference(settings, Path(tmp))
        progress("gathering the current window")
        current = current_window(settings, chosen, now)
        progress(f"comparing {len(current.features):,} current rows with {len(reference.features):,} reference rows")
        report_path = reports_dir(settings) / f"drift-{now:%Y%m%dT%H%M%SZ}.html"
        figures = compare(reference.features, current.features,
                          activity_scores(reference.onnx_path, reference.features),
                          activity_scores(reference.onnx_path, current.features),
                          reference.statistics, monitoring.drift_share_threshold, report_path,
                          monitoring.drift_method, monitoring.drift_threshold,
                          time_driven_features(monitoring), reference.importances)
    _export(figures)
    progress("logging the report to MLflow")
    run_id = _log_run(settings, figures, reference, current, report_path)
    alerts = drift_alerts(figures, monitoring, reference.model_version, current.source)
    delivered = notify(settings, alerts)
    policy_on = monitoring.retrain_on_drift if retrain is None else retrain
    decision = retrain_decision(settings, figures.detected, policy_on, now)
    metrics.DRIFT_RUNS.labels("drift" if figures.detected else "no_drift").inc()
    metrics.DRIFT_LAST_RUN.set(time.time())
    outcome = DriftOutcome(figures, current.source, current.as_of, reference.model_version, report_path, run_id,
                           alerts, delivered, decision, None if decision is None else decision.reason,
                           time.monotonic() - started)
    metrics.write_textfile(settings, "drift", metrics.DRIFT_METRICS)
    return outcome


def time_driven_features(monitoring: MonitoringSettings) -> tuple[str, ...]:
    """``monitoring.time_driven_features``, each a model feature."""
    unknown = [name for name in monitoring.time_driven_features if name not in FEATURE_NAMES]
    if unknown:
        raise DriftError(f"monitoring.time_driven_features names {', '.join(unknown)}, not model features "
                         f"({', '.join(FEATURE_NAMES)})")
    return monitoring.time_driven_features


def _export(figures: DriftFigures) -> None:
    metrics.DRIFT_SHARE.set(figures.share)
    metrics.WEIGHTED_DRIFT_SHARE.set(figures.weighted_share)
    for name, moved in figures.time_driven.items():
        metrics.TIME_DRIVEN_DRIFT.labels(name).set(int(moved))
    metrics.DRIFT_DETECTED.set(int(figures.detected))
    metrics.DRIFTED_FEATURES.set(len(figures.drifted))
    metrics.PREDICTION_DRIFT_SCORE.set(figures.prediction_score)
    metrics.PREDICTION_DRIFT_DETECTED.set(int(figures.prediction_detected))
    metrics.DRIFT_ROWS.set(figures.current_rows)
    for name, value in figures.psi.items():
        metrics.FEATURE_PSI.labels(name).set(value)
    for name, value in figures.scores.items():
        metrics.FEATURE_DRIFT_SCORE.labels(name).set(value)


def _log_run(settings: Settings, figures: DriftFigures, reference: Reference, current: Current,
             report_path: Path) -> str | None:
    with mlflow.start_run(experiment_id=registry.experiment_id(settings, metrics.monitoring_experiment(settings)),
                          run_name=f"drift {current.as_of:%Y-%m-%d %H:%M}",
                          tags={"job": "drift", "model_version": reference.model_version,
                                "model_run_id": reference.run_id, "source": current.source}) as run:
        mlflow.log_params({"source": current.source, "current": current.detail, "as_of": current.as_of.isoformat(),
                           "drift_share_threshold": settings.monitoring.drift_share_threshold,
                           "psi_threshold": settings.monitoring.psi_threshold})
        mlflow.log_metrics({"drift_share": figures.share, "drift_detected": float(figures.detected),
                            **({"weighted_drift_share": figures.weighted_share}
                               if np.isfinite(figures.weighted_share) else {}),
                            "drifted_features": float(len(figures.drifted)),
                            "prediction_drift_score": figures.prediction_score,
                            "prediction_drift_detected": float(figures.prediction_detected),
                            "current_rows": float(figures.current_rows),
                            **{f"psi_{k}": v for k, v in figures.psi.items()},
                            **{f"drift_score_{k}": v for k, v in figures.scores.items()}})
        mlflow.log_artifact(str(report_path), "drift")
        mlflow.log_dict({"drifted": figures.drifted, "methods": figures.methods, "scores": figures.scores,
                         "psi": figures.psi, "time_driven": figures.time_driven}, "drift/figures.json")
        return run.info.run_id


def retrain_decision(settings: Settings, detected: bool, policy_on: bool, now: datetime) -> RetrainDecision | None:
    """The policy's answer for this run (None when nothing drifted), from the time of the last drift-triggered run."""
    if not detected:
        return None
    if not policy_on:
        return RetrainDecision(False, "not started: monitoring.retrain_on_drift is off")
    last = _read_state(settings).get("last_drift_retrain")
    last_at = datetime.fromisoformat(last) if last else None
    monitoring = settings.monitoring.model_copy(update={"retrain_on_drift": True})
    if not should_retrain(detected, last_at, now, monitoring):
        interval = monitoring.retrain_min_interval_h
        return RetrainDecision(False, f"not started: the last drift-triggered run was at {last_at:%Y-%m-%d %H:%M} "
                                      f"UTC (monitoring.retrain_min_interval_h = {interval:g})")
    return RetrainDecision(True, "drift detected: a training run is due (monitoring.retrain_on_drift)")


def record_retrain_started(settings: Settings, now: datetime) -> None:
    """Remember when a drift-triggered run started, for the policy's minimum interval."""
    _write_state(settings, {**_read_state(settings), "last_drift_retrain": now.isoformat()})
