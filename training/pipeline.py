"""One training run: labels from the archive, features from Feast, fit, evaluate, log, register, gate.

Every step reports to a ``Reporter`` (progress bars on the command line, nothing in tests). The
champion alias only moves at the very end, after everything else succeeded, so a failed run
leaves the current champion untouched; the MLflow run is marked FAILED with the reason.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from activity_settings import Settings
from features.state import ENTITY_KEY
from features.store import historical_features, open_feature_store
from features.transform import FEATURE_NAMES
from model_contract import registry
from model_contract.artifacts import (
    CHAMPION,
    FALLBACK_ONNX_FILE,
    FORECAST_FILE,
    ONNX_FILE,
    REFERENCE_DIR,
    REFERENCE_FEATURES,
    REFERENCE_STATISTICS,
)
from model_contract.evaluate import Metrics, comparison_table, evaluate, markdown_table
from model_contract.forecast import ActivityForecast
from model_contract.labels import SECONDS_PER_DAY, LabelPolicy, as_of_days
from model_contract.onnx_runner import as_matrix
from model_contract.reference import mean_importances, reference_statistics
from streaming.archive import daily_counts
from training.baselines import fit_baselines
from training.data import NoTrainingData, sample_customers
from training.dataset import TimeSplit, labelled_entities, split_by_time, training_set
from training.forecast import ForecastUnavailable, fit_forecast
from training.gate import decide
from training.model import ActivityEnsemble, FittedModels, ModelParams, SingleModel, combine, fit_members
from training.model import decide as decide_classes
from training.model_card import model_card
from training.onnx_export import ensemble_to_onnx, fallback_to_onnx, save
from training.plots import save_all
from training.reference import reference_entities
from training.reporting import Reporter
from training.tracking import load_ensemble, log_model

STEPS = ("labels", "features", "fit", "baselines", "forecast", "evaluate", "log", "gate")


@dataclass
class TrainingData:
    frame: pd.DataFrame  # entity rows + labels + FEATURE_NAMES
    split: TimeSplit
    daily: pd.DataFrame  # customer_id, day, count (what the labels were computed from)
    build_s: float = 0.0
    retrieval_s: float = 0.0

    def part(self, name: str) -> pd.DataFrame:
        rows = self.split.rows(name, as_of_days(self.frame), self.frame[ENTITY_KEY].to_numpy())
        return self.frame[rows].reset_index(drop=True)


@dataclass
class TrainingOutcome:
    run_id: str
    version: str
    decision: Any  # training.gate.Decision
    metrics: dict[str, dict[str, float]]  # model or baseline name -> metrics on the test window
    champion_metrics: dict[str, float] | None
    rows: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)


def policy_of(settings: Settings) -> LabelPolicy:
    t = settings.training
    return LabelPolicy(horizon_days=t.horizon_days, decline_below=t.decline_below, growth_above=t.growth_above,
                       target=t.target)


def params_of(settings: Settings) -> ModelParams:
    return ModelParams(**settings.training.model.model_dump())


def build_training_data(settings: Settings, store: Any = None, daily: pd.DataFrame | None = None) -> TrainingData:
    """Labelled entity rows on the as_of grid, split by time, with their point-in-time features from Feast."""
    started = time.perf_counter()
    t = settings.training
    policy = policy_of(settings)
    daily = daily_counts(settings) if daily is None else daily
    entities = labelled_entities(daily, policy, t.grid_days)
    if entities.empty:
        span = int(daily["day"].max() - daily["day"].min() + 1) if len(daily) else 0
        raise NoTrainingData(f"{span} days of archived events: a training set needs at least "
                             f"2 x training.horizon_days ({2 * policy.horizon_days}) days of history")
    days = as_of_days(entities)
    split = split_by_time(days, policy.horizon_days, (t.validation_share, t.test_share))
    if len(split.train) == 0 or len(split.validation) == 0:
        raise NoTrainingData(
            f"{len(np.unique(days))} as_of dates are too few to split into train, validation and test "
            f"with a gap of {policy.horizon_days} days: stream a longer history or shorten training.horizon_days")
    used = np.concatenate([split.train, split.validation, split.test])
    entities = entities[np.isin(days, used)].reset_index(drop=True)
    if t.max_rows is not None and len(entities) > t.max_rows:
        kept = sample_customers(entities[[ENTITY_KEY]].drop_duplicates(), t.max_rows / len(entities), t.model.seed)
        entities = entities[entities[ENTITY_KEY].isin(kept[ENTITY_KEY])].reset_index(drop=True)
        daily = daily[daily[ENTITY_KEY].isin(kept[ENTITY_KEY])].reset_index(drop=True)
    entity_days, entity_customers = as_of_days(entities), entities[ENTITY_KEY].to_numpy()
    classes = policy.classes
    for name in ("train", "validation"):
        present = set(entities.loc[split.rows(name, entity_days, entity_customers), "label_index"].unique())
        if len(present) < len(classes):
            missing = [classes[i] for i in range(len(classes)) if i not in present]
            advice = ("adjust training.decline_below / training.growth_above" if policy.target == "change"
                      else "change training.horizon_days")
            raise NoTrainingData(f"the {name} split has no {', '.join(missing)} rows: stream a longer or larger "
                                 f"history, or {advice}")
    store = open_feature_store(settings) if store is None else store
    retrieval_started = time.perf_counter()
    frame = training_set(store, entities)
    retrieval_s = time.perf_counter() - retrieval_started
    data = TrainingData(frame=frame, split=split, daily=daily, retrieval_s=retrieval_s)
    data.build_s = time.perf_counter() - started
    return data


def fit_models(settings: Settings, data: TrainingData) -> FittedModels:
    """The ensemble and its members, on the backend the settings choose."""
    train, validation = data.part("train"), data.part("validation")
    y_train, y_validation = train["label_index"].to_numpy(), validation["label_index"].to_numpy()
    params = params_of(settings)
    classes = policy_of(settings).classes
    if settings.training.backend == "spark" and settings.training.target != "change":
        raise ValueError("training.backend=spark fits the change target only; use training.backend=local for "
                         f"training.target={settings.training.target!r}")
    if settings.training.backend == "spark":
        from training.spark_backend import fit_members_spark  # deferred: pyspark only for the Spark backend

        forest, booster = fit_members_spark(settings, train, params)
    else:
        forest, booster = fit_members(as_matrix(train), y_train, params, len(classes))
    return combine(forest, booster, as_matrix(validation), y_validation, params, classes)


def score_all(fitted: FittedModels, scored: dict[str, Any], test: pd.DataFrame
              ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each model's (probabilities, decisions) on the test rows, every probability computed once.

    The ensemble, each of its members alone and every model in ``scored`` (whatever scores entity
    frames with ``predict_proba(frame)``: the baselines, and the backtest's hybrid). A model with
    tuned ``decision_weights`` decides ``argmax(p * w)`` on the same probabilities; one without
    (persistence, whose rule is not its probabilities) decides with its own ``predict``.
    """
    x_test = as_matrix(test)
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ours: dict[str, ActivityEnsemble | SingleModel] = {"ensemble": fitted.ensemble, **fitted.singles}
    for name, model in ours.items():
        probabilities = model.predict_proba(x_test)
        outputs[name] = probabilities, decide_classes(probabilities, model.decision_weights)
    for name, scorer in scored.items():
        probabilities = scorer.predict_proba(test)
        weights = getattr(scorer, "decision_weights", None)
        decided = decide_classes(probabilities, weights) if weights is not None else scorer.predict(test)
        outputs[name] = probabilities, decided
    return outputs


def evaluate_outputs(outputs: dict[str, tuple[np.ndarray, np.ndarray]], test: pd.DataFrame,
                     classes: tuple[str, ...]) -> dict[str, Metrics]:
    y_test = test["label_index"].to_numpy()
    return {name: evaluate(y_test, probabilities, predicted, classes)
            for name, (probabilities, predicted) in outputs.items()}


def evaluate_all(fitted: FittedModels, scored: dict[str, Any], test: pd.DataFrame) -> dict[str, Metrics]:
    """The ensemble, each of its members alone and every model in ``scored``, on the same test rows."""
    return evaluate_outputs(score_all(fitted, scored, test), test, fitted.ensemble.classes)


@dataclass
class Step:
    """What a timed step reports when it ends: its own result line, or its duration."""

    result: str = ""


@contextmanager
def timed_step(timings: dict[str, float], name: str, reporter: Reporter, detail: str = "") -> Iterator[Step]:
    """Announce a step, time it into ``timings[name]`` and report it done (with ``step.result`` if set)."""
    reporter.step(name, detail)
    started = time.perf_counter()
    step = Step()
    yield step
    timings[name] = time.perf_counter() - started
    reporter.done(name, step.result or f"{timings[name]:.1f} s")


def check_servable(settings: Settings) -> None:
    """A registered model must be one the scorer serves: the change target's classes."""
    if settings.training.target != "change":
        raise ValueError(f"training.target={settings.training.target!r}: the scorer, its ONNX and Triton models serve "
                         "the change target only; evaluate the active target with `activity backtest --target active`")


def train(settings: Settings, reporter: Reporter | None = None, data: TrainingData | None = None) -> TrainingOutcome:
    """One full run; raises (with the MLflow run marked FAILED) on any error, leaving the champion as it was."""
    check_servable(settings)
    reporter = reporter or Reporter()
    timings: dict[str, float] = {}
    experiment = registry.experiment_id(settings)
    with mlflow.start_run(experiment_id=experiment, run_name=time.strftime("train-%Y%m%d-%H%M%S")) as run:
        try:
            return _train(settings, reporter, data, timings, run.info.run_id)
        except BaseException as exc:
            mlflow.set_tag("failure", f"{type(exc).__name__}: {exc}"[:5_000])
            mlflow.end_run(status="FAILED")
            raise


def _train(settings: Settings, reporter: Reporter, data: TrainingData | None, timings: dict[str, float],
           run_id: str) -> TrainingOutcome:
    check_servable(settings)
    if data is None:
        with timed_step(timings, "labels", reporter, "labels from the archive, features from Feast"):
            data = build_training_data(settings)
    timings["features"] = data.retrieval_s
    train_rows, validation, test = data.part("train"), data.part("validation"), data.part("test")
    rows = {"train": len(train_rows), "validation": len(validation), "test": len(test)}
    backend = settings.training.backend
    with timed_step(timings, "fit", reporter, f"RandomForest + XGBoost on {rows['train']:,} rows ({backend})"):
        fitted = fit_models(settings, data)
    with timed_step(timings, "baselines", reporter, "persistence, recency/frequency, BG/NBD, Pareto/NBD"):
        fitted_baselines = fit_baselines(train_rows, validation, data.daily, policy_of(settings))
        baselines = fitted_baselines.fitted
        for name, reason in fitted_baselines.skipped.items():
            mlflow.set_tag(f"baseline_{name}_skipped", reason[:5_000])
    with timed_step(timings, "forecast", reporter,
                    f"P(active) and expected transactions over {settings.training.horizon_days} days") as step:
        forecast = _fit_forecast(settings, train_rows, validation, test)
        if forecast is not None:
            step.result = (f"{forecast.model}: test ROC-AUC {forecast.figures.get('test_roc_auc', math.nan):.3f}, "
                           f"count MAE {forecast.figures.get('test_count_mae', math.nan):.2f}")
    x_test, y_test = as_matrix(test), test["label_index"].to_numpy()
    with timed_step(timings, "evaluate", reporter, f"{rows['test']:,} test rows"):
        probabilities = fitted.ensemble.predict_proba(x_test)
        results = evaluate_all(fitted, baselines, test)
    metrics = {name: result.as_dict() for name, result in results.items()}
    with tempfile.TemporaryDirectory(prefix="activity-train-") as scratch:
        workdir = Path(scratch)
        with timed_step(timings, "log", reporter, "parameters, metrics, plots, model card, ONNX, reference sample"):
            info = _log_run(settings, data, fitted, results, probabilities, y_test, workdir, forecast)
            version = mlflow.register_model(info.model_uri, settings.mlflow.registered_model)
            if settings.serving.model_server == "triton":
                from model_contract.triton_repository import write_version

                write_version(settings, str(version.version), workdir / ONNX_FILE)
        with timed_step(timings, "gate", reporter, "against the guards and the current champion"):
            champion = registry.load_by_alias(settings, CHAMPION, workdir / "champion")
            champion_metrics = None
            if champion is not None:
                current = load_ensemble(champion)
                champion_metrics = evaluate(y_test, current.predict_proba(x_test), current.predict(x_test)).as_dict()
                mlflow.log_metrics({f"champion_{k}": v for k, v in champion_metrics.items() if np.isfinite(v)})
            classical: dict[str, dict[str, float]] = {
                name: metrics[name] for name in baselines if name in settings.training.guard_baselines}
            decision = decide(metrics["ensemble"], classical, champion_metrics, settings.training)
            client = registry.client(settings)
            client.set_registered_model_alias(settings.mlflow.registered_model, decision.alias, version.version)
            client.set_model_version_tag(settings.mlflow.registered_model, version.version, "promotion",
                                         decision.summary())
            if champion is not None:
                client.set_model_version_tag(settings.mlflow.registered_model, version.version,
                                             "compared_with_champion", champion.version)
            mlflow.set_tags({"promotion": decision.summary(), "registered_version": version.version,
                             "alias": decision.alias})
    mlflow.log_metrics({f"time_{name}_s": value for name, value in timings.items()})
    return TrainingOutcome(run_id=run_id, version=str(version.version), decision=decision, metrics=metrics,
                           champion_metrics=champion_metrics, rows=rows, timings=timings)


def _fit_forecast(settings: Settings, train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame
                  ) -> ActivityForecast | None:
    """The scorer's activity forecast, its figures logged; None (tagged with the reason) if it cannot be fitted."""
    try:
        forecast, figures = fit_forecast(train, validation, test, settings.training.horizon_days,
                                         settings.training.model.seed)
    except ForecastUnavailable as exc:
        mlflow.set_tag("forecast_skipped", str(exc)[:5_000])
        return None
    mlflow.set_tag("forecast_model", forecast.model)
    mlflow.log_metrics({f"forecast_{model}_{name}": value for model, scores in figures.items()
                        for name, value in scores.items() if math.isfinite(value)})
    return forecast


def _log_run(settings: Settings, data: TrainingData, fitted: FittedModels, results: dict[str, Any],
             probabilities: np.ndarray, y_test: np.ndarray, workdir: Path,
             forecast: ActivityForecast | None = None) -> Any:
    t = settings.training
    mlflow.log_params({
        "backend": t.backend, "horizon_days": t.horizon_days, "decline_below": t.decline_below,
        "growth_above": t.growth_above, "grid_days": t.grid_days, "features": len(FEATURE_NAMES),
        **{f"model_{k}": v for k, v in t.model.model_dump().items()},
        "decision_weights": json.dumps(np.round(fitted.ensemble.decision_weights, 4).tolist()),
        **{f"{name}_rows": len(data.part(name)) for name in ("train", "validation", "test")},
        **{f"{name}_as_of": window for name, window in split_windows(data.split).items()},
    })
    flat = {}
    for name, figures in ((n, r.as_dict()) for n, r in results.items()):
        prefix = "" if name == "ensemble" else f"{name}_"
        flat.update({f"{prefix}{k}": v for k, v in figures.items() if np.isfinite(v)})
    mlflow.log_metrics(flat)
    table = comparison_table(results)
    mlflow.log_text(markdown_table(table), "evaluation/comparison.md")
    mlflow.log_text(table.to_csv(), "evaluation/comparison.csv")
    test = data.part("test")
    importances = {"random_forest": fitted.ensemble.forest.feature_importances_,
                   "xgboost": fitted.ensemble.booster.feature_importances_}
    plots = workdir / "plots"
    for path in save_all(y_test, probabilities, fitted.ensemble.predict(as_matrix(test)), importances, plots):
        mlflow.log_artifact(str(path), "plots")
    mlflow.log_text(model_card(
        model_name=settings.mlflow.registered_model,
        split={name: (as_of_date(getattr(data.split, name).min()), as_of_date(getattr(data.split, name).max()),
                      len(data.part(name))) for name in ("train", "validation", "test")},
        policy=policy_of(settings), feature_names=list(FEATURE_NAMES), table=table,
        headline=results["ensemble"].as_dict(), forecast=forecast.to_dict() if forecast is not None else None,
    ), "model_card.md")
    entities = reference_entities(data.daily, t.reference_sample_rows, seed=t.model.seed)
    sample = historical_features(open_feature_store(settings), entities)[[*entities.columns, *FEATURE_NAMES]]
    sample_path = workdir / REFERENCE_DIR / REFERENCE_FEATURES
    sample_path.parent.mkdir(parents=True)
    sample.to_parquet(sample_path, index=False)
    mlflow.log_artifact(str(sample_path), REFERENCE_DIR)
    statistics = reference_statistics(sample, data.part("train")["label"])
    mlflow.log_dict(statistics, f"{REFERENCE_DIR}/{REFERENCE_STATISTICS}")
    mlflow.log_dict(mean_importances({name: dict(zip(FEATURE_NAMES, np.asarray(values, dtype=float).tolist(),
                                                     strict=True)) for name, values in importances.items()}),
                    f"{REFERENCE_DIR}/importances.json")
    onnx_path = save(ensemble_to_onnx(fitted.ensemble), workdir / ONNX_FILE)
    fallback_path = save(fallback_to_onnx(fitted.ensemble), workdir / FALLBACK_ONNX_FILE)
    forecast_path = forecast.save(workdir / FORECAST_FILE) if forecast is not None else None
    return log_model(fitted.ensemble, onnx_path, fallback_path, test.head(50), workdir / "model", forecast_path)


def split_windows(split: TimeSplit) -> dict[str, str]:
    """Each split's as_of dates, "first..last"; a held-out validation says so."""
    windows = {name: f"{as_of_date(days.min())}..{as_of_date(days.max())}" for name, days in
               (("train", split.train), ("validation", split.validation), ("test", split.test))}
    if split.held_out_share:
        windows["validation"] += f", {split.held_out_share:.0%} of the customers held out of training"
    return windows


def as_of_date(epoch_day: Any) -> str:
    """An epoch day as its ISO date."""
    return str(pd.Timestamp(int(epoch_day) * SECONDS_PER_DAY, unit="s").date())
