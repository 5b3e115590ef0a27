"""`activity backtest`: a file of real transactions through the platform's own code, every model side by side.

The file is read as `activity produce replay` reads it; every record is judged by the stream's own
validator (``streaming.job.parse``); the valid ones are folded into activity states by the
backfill's code (``streaming.backfill``) in a scratch feature store; then the trainer's own steps
run on a time split: labels, point-in-time features from Feast, the ensemble, the baselines, and the
hybrid (``training.hybrid``: BG/NBD and Pareto/NBD as members of the ensemble's stacker). Nothing is
registered and no alias moves. The report judges the hybrid (the ensemble when neither classic model
could be fitted) against every baseline and shows the ensemble and its members beside them, all on the
same test window, and an MLflow run in the ``<mlflow.experiment>-backtest`` experiment keeps
the figures, the comparison table and the plots.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import mlflow
import numpy as np
import pandas as pd

from activity_settings import Settings
from features.state import ENTITY_KEY
from features.store import FeatureWriter
from model_contract import registry
from model_contract.evaluate import Metrics, comparison_table, markdown_table
from model_contract.labels import TARGETS
from streaming.publish import ColumnMapping, ReplayDefaults, encode_replayed, read_transactions_file
from training.baselines import CLASSIC_MODELS, BgNbdBaseline, PersistenceBaseline, fit_baselines
from training.forecast import ForecastUnavailable, fit_forecast, rank_correlation
from training.hybrid import HybridModel
from training.pipeline import (
    Reporter,
    build_training_data,
    evaluate_outputs,
    fit_models,
    policy_of,
    score_all,
    split_windows,
    timed_step,
)
from training.plots import save_all

MODELS: Final = ("hybrid", "ensemble", "random_forest", "xgboost")  # the rest of a report's rows are baselines
STEPS: Final = ("read", "validate", "backfill", "labels", "fit", "baselines", "forecast", "evaluate", "log")
_RAW_DDL: Final = "topic STRING, partition INT, offset BIGINT, key BINARY, value BINARY"


@dataclass(frozen=True)
class BacktestSource:
    """Where the transactions are and how their columns map to the contract (as for `produce replay`)."""

    path: Path
    mapping: ColumnMapping
    defaults: ReplayDefaults = ReplayDefaults()


@dataclass
class BacktestReport:
    target: str
    horizon_days: int
    records: int  # read from the file
    rejected: dict[str, int]  # error code -> records the contract refused
    events: int  # unique purchases folded into the states
    customers: int
    rows: dict[str, int]  # labelled rows per split
    windows: dict[str, str]  # as_of dates per split, "first..last"
    metrics: dict[str, dict[str, float]]  # model or baseline -> Metrics.as_dict()
    skipped: dict[str, str] = field(default_factory=dict)  # baseline -> why it could not be fitted
    forecast: dict[str, Any] = field(default_factory=dict)  # the scorer's forecast: model and figures, {} if none
    run_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def baselines(self) -> list[str]:
        return [name for name in self.metrics if name not in MODELS]

    @property
    def model(self) -> str:
        """The model the report judges: the hybrid when a classic model could be fitted, else the ensemble."""
        return "hybrid" if "hybrid" in self.metrics else "ensemble"

    def best_baseline(self, metric: str = "roc_auc") -> str:
        """The baseline with the highest test ``metric`` (ROC-AUC: the JSON line's ``best_baseline``)."""
        return max(self.baselines, key=lambda name: _finite(self.metrics[name][metric]))

    def model_beats_all(self) -> bool:
        """The model ahead of every baseline on both ROC-AUC and macro-F1."""
        model = self.metrics[self.model]
        return all(model[metric] > self.metrics[name][metric]
                   for name in self.baselines for metric in ("roc_auc", "macro_f1"))

    def summary(self) -> dict[str, Any]:
        """The one JSON line `activity backtest` ends with."""
        best, best_f1 = self.best_baseline(), self.best_baseline("macro_f1")
        bgnbd = self.metrics.get("bg_nbd", {})
        return {
            "target": self.target, "horizon_days": self.horizon_days, "customers": self.customers,
            "rows": sum(self.rows.values()),
            "model_auc": json_figure(self.metrics[self.model]["roc_auc"]),
            "model_macro_f1": json_figure(self.metrics[self.model]["macro_f1"]),
            "bgnbd_auc": json_figure(bgnbd.get("roc_auc", math.nan)),
            "bgnbd_macro_f1": json_figure(bgnbd.get("macro_f1", math.nan)),
            "best_baseline": best,
            "best_baseline_auc": json_figure(self.metrics[best]["roc_auc"]),
            "best_baseline_macro_f1": json_figure(self.metrics[best]["macro_f1"]),
            # the F1 leader may be another baseline (persistence's rule beside a better-ranking model)
            "best_f1_baseline": best_f1,
            "best_f1_baseline_macro_f1": json_figure(self.metrics[best_f1]["macro_f1"]),
        }


def count_metrics(test: pd.DataFrame, scores: dict[str, np.ndarray], counts: dict[str, np.ndarray]
                  ) -> dict[str, dict[str, float]]:
    """How each model ranks and counts the test rows' actual purchases in the horizon (``test["next"]``).

    ``count_spearman``: Spearman's rank correlation of the model's predicted count, or of its
    probability of activity where it predicts no count, with the actual count. ``count_mae``: mean
    absolute error of the predicted count (NaN for a model without one).
    """
    actual = test["next"].to_numpy(dtype=np.float64)
    figures = {}
    for name, score in scores.items():
        predicted = counts.get(name)
        ranked = np.asarray(predicted if predicted is not None else score, dtype=np.float64)
        rho = rank_correlation(ranked, actual)
        mae = float(np.mean(np.abs(predicted - actual))) if predicted is not None else math.nan
        figures[name] = {"count_spearman": rho, "count_mae": mae}
    return figures


def _count_predictions(scored: dict[str, Any], outputs: dict[str, tuple[np.ndarray, np.ndarray]],
                       test: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(P(active) per model, from its test ``outputs``; predicted purchases in the horizon for the models
    that have a count).

    Counts: persistence says the last horizon's again; BG/NBD and Pareto/NBD their conditional
    expectations; the hybrid its own probability of any purchase times BG/NBD's expected count given one.
    """
    scores = {name: probabilities[:, 1] for name, (probabilities, _) in outputs.items()}
    counts = ({PersistenceBaseline.name: test["previous"].to_numpy(dtype=np.float64)}
              if PersistenceBaseline.name in scored else {})
    for model in CLASSIC_MODELS:
        if model.name in scored:
            counts[model.name] = np.asarray(scored[model.name].expected_next(test), dtype=np.float64)
    if BgNbdBaseline.name in counts and HybridModel.name in scores:
        expected = counts[BgNbdBaseline.name]
        given_any = np.divide(expected, scores[BgNbdBaseline.name], out=np.ones_like(expected),
                              where=scores[BgNbdBaseline.name] > 1e-12)
        counts[HybridModel.name] = scores[HybridModel.name] * np.maximum(given_any, 1.0)
    return scores, counts


def _forecast(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, horizon_days: int, seed: int
              ) -> dict[str, Any]:
    """What `activity train run` would register for the scorer (``training.forecast``): the kept model's
    figures (``test_roc_auc`` of P(active), ``test_count_mae``, ...), ``{}`` when it cannot be fitted."""
    try:
        kept, figures = fit_forecast(train, validation, test, horizon_days, seed)
    except ForecastUnavailable:
        return {}
    return {"model": kept.model, **figures[kept.model]}


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def json_figure(value: float) -> float | None:
    """A figure for a JSON line: four decimals, None for NaN (JSON has no NaN)."""
    return round(float(value), 4) if math.isfinite(value) else None


def backtest_settings(settings: Settings, work_dir: Path, horizon_days: int | None, target: str = "change"
                      ) -> Settings:
    """The user's settings with the feature store in ``work_dir``, the MLflow store left where it is, and
    the target and horizon evaluated (validated as the settings validate them)."""
    update: dict[str, Any] = {"target": target}
    if horizon_days is not None:
        update["horizon_days"] = horizon_days
    training = type(settings.training).model_validate(settings.training.model_dump() | update)
    mlflow_settings = settings.mlflow.model_copy(update={
        "tracking_uri": registry.tracking_uri(settings), "artifact_location": registry.artifact_location(settings)})
    return settings.model_copy(update={"data_dir": work_dir, "training": training, "mlflow": mlflow_settings})


def backtest(settings: Settings, source: BacktestSource, *, target: str = "change", horizon_days: int | None = None,
             work_dir: Path | None = None, reporter: Reporter | None = None,
             progress: Callable[[int, int], None] = lambda done, total: None) -> BacktestReport:
    """Run the whole comparison; ``work_dir`` keeps the scratch feature store (default: a temporary one)."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: one of {', '.join(TARGETS)}")
    reporter = reporter or Reporter()
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="activity-backtest-") as scratch:
            return _backtest(backtest_settings(settings, Path(scratch), horizon_days, target),
                             settings.mlflow.experiment, source, target, reporter, progress)
    work_dir.mkdir(parents=True, exist_ok=True)
    return _backtest(backtest_settings(settings, work_dir, horizon_days, target), settings.mlflow.experiment, source,
                     target, reporter, progress)


def _backtest(cfg: Settings, experiment: str, source: BacktestSource, target: str, reporter: Reporter,
              progress: Callable[[int, int], None]) -> BacktestReport:
    from infra.spark import spark_session
    from streaming.backfill import EVENT_COLUMNS, history_partials, write_history
    from streaming.job import parse

    timings: dict[str, float] = {}
    with timed_step(timings, "read", reporter, str(source.path)) as step:
        table = read_transactions_file(source.path, source.mapping, source.defaults)
        step.result = f"{table.num_rows:,} records"

    with timed_step(timings, "validate", reporter, "the stream's contract validator, on Spark") as step:
        spark = spark_session(cfg, "activity-backtest")
        raw = pd.DataFrame({"topic": "backtest", "partition": 0,
                            "offset": np.arange(table.num_rows, dtype=np.int64),
                            "key": None, "value": encode_replayed(table)})
        parsed = parse(spark.createDataFrame(raw, schema=_RAW_DDL), cfg.streaming.earliest_event_time).cache()
        rejected = Counter({row["error_code"]: int(row["count"]) for row in
                            parsed.where("error_code IS NOT NULL").groupBy("error_code").count().collect()})
        step.result = f"{table.num_rows - sum(rejected.values()):,} valid, {sum(rejected.values()):,} refused"

    with timed_step(timings, "backfill", reporter,
                    "daily partials folded into activity states (the backfill's code)") as step:
        try:
            partials = history_partials(parsed.where("error_code IS NULL").select(*EVENT_COLUMNS))
        finally:
            parsed.unpersist()
        if partials.empty:
            raise ValueError(f"{source.path}: no valid purchase to learn from "
                             f"({dict(rejected) or 'the file is empty'})")
        summary = write_history(partials, FeatureWriter.open(cfg), progress=progress)
        purchased = partials[partials["count"] > 0]  # a day of refunds alone is no activity
        daily = purchased[[ENTITY_KEY, "day", "count"]].astype({"day": np.int64, "count": np.int64})
        step.result = f"{summary.events:,} purchases of {summary.customers:,} customers over {summary.days:,} days"

    with timed_step(timings, "labels", reporter,
                    f"{target} over {cfg.training.horizon_days} days; point-in-time features from Feast") as step:
        data = build_training_data(cfg, daily=daily)
        train, validation, test = data.part("train"), data.part("validation"), data.part("test")
        rows = {"train": len(train), "validation": len(validation), "test": len(test)}
        step.result = f"{rows['train']:,} / {rows['validation']:,} / {rows['test']:,} rows"

    with timed_step(timings, "fit", reporter, f"RandomForest + XGBoost on {rows['train']:,} rows"):
        fitted = fit_models(cfg, data)
    with timed_step(timings, "baselines", reporter, "persistence, recency/frequency, BG/NBD, Pareto/NBD"):
        baselines = fit_baselines(train, validation, daily, policy_of(cfg))
    with timed_step(timings, "forecast", reporter,
                    "the scorer's forecast: BG/NBD and Pareto/NBD on the training rows' features") as step:
        forecast = _forecast(train, validation, test, cfg.training.horizon_days, cfg.training.model.seed)
        step.result = (f"{forecast['model']}: P(active) test ROC-AUC {forecast.get('test_roc_auc', math.nan):.4f}"
                       if forecast else "not fitted")
    with timed_step(timings, "evaluate", reporter, f"{rows['test']:,} test rows"):
        scored: dict[str, Any] = {}  # models scored on entity frames, like the baselines
        classics = tuple(model for model in (baselines.fitted.get(m.name) for m in CLASSIC_MODELS)
                         if isinstance(model, BgNbdBaseline))  # the classic models that fitted
        if classics:  # the hybrid: the classic models as members of the stacker
            scored[HybridModel.name] = HybridModel.fit(fitted.ensemble, classics, validation)
        scored |= baselines.fitted
        outputs = score_all(fitted, scored, test)  # every model's probabilities, once
        results = evaluate_outputs(outputs, test, fitted.ensemble.classes)
        counts = count_metrics(test, *_count_predictions(scored, outputs, test)) if target == "active" else {}

    report = BacktestReport(
        target=target, horizon_days=cfg.training.horizon_days, records=table.num_rows, rejected=dict(rejected),
        events=summary.events, customers=summary.customers, rows=rows,
        windows=split_windows(data.split),
        metrics={name: result.as_dict() | counts.get(name, {}) for name, result in results.items()},
        skipped=baselines.skipped, forecast=forecast,
        timings=timings)
    with timed_step(timings, "log", reporter, f"MLflow experiment {experiment}-backtest"):
        report.run_id = _log(cfg, f"{experiment}-backtest", source, report, results, fitted, outputs["ensemble"],
                             test)
    return report


def _log(cfg: Settings, experiment: str, source: BacktestSource, report: BacktestReport,
         results: dict[str, Metrics], fitted: Any, ensemble_output: tuple[np.ndarray, np.ndarray],
         test: pd.DataFrame) -> str:
    with mlflow.start_run(experiment_id=registry.experiment_id(cfg, experiment),
                          run_name=f"backtest-{source.path.stem}-{report.target}-{report.horizon_days}d") as run:
        mlflow.log_params({
            "file": str(source.path), "target": report.target, "horizon_days": report.horizon_days,
            "records": report.records, "events": report.events, "customers": report.customers,
            **{f"{name}_rows": n for name, n in report.rows.items()},
            **{f"{name}_as_of": window for name, window in report.windows.items()},
        })
        mlflow.log_metrics({("" if name == "ensemble" else f"{name}_") + key: value
                            for name, figures in report.metrics.items() for key, value in figures.items()
                            if isinstance(value, float) and math.isfinite(value)})
        if report.forecast:
            mlflow.set_tag("forecast_model", report.forecast["model"])
            mlflow.log_metrics({f"forecast_{key}": value for key, value in report.forecast.items()
                                if isinstance(value, float) and math.isfinite(value)})
        mlflow.log_dict({"rejected": report.rejected, "skipped": report.skipped, "forecast": report.forecast,
                         "summary": report.summary()}, "backtest.json")
        table = comparison_table(results)
        mlflow.log_text(markdown_table(table), "evaluation/comparison.md")
        mlflow.log_text(table.to_csv(), "evaluation/comparison.csv")
        y_test = test["label_index"].to_numpy()
        importances = {"random_forest": fitted.ensemble.forest.feature_importances_,
                       "xgboost": fitted.ensemble.booster.feature_importances_}
        with tempfile.TemporaryDirectory(prefix="activity-backtest-plots-") as plots:
            for path in save_all(y_test, *ensemble_output,
                                 importances, Path(plots), classes=fitted.ensemble.classes):
                mlflow.log_artifact(str(path), "plots")
        return run.info.run_id
