"""`activity monitor`: drift (and the retraining it decides on) and online quality, once or on their crons.

Each command imports its part when it runs, so `activity --help` starts without loading Evidently or MLflow.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from activity.commands.common import (
    USER_ERRORS,
    UserError,
    console,
    fail,
    settings,
)

app = typer.Typer(help="Drift and online quality: the champion watched against its training data and "
                         "against the outcomes that followed its predictions.", no_args_is_help=True)


@app.command("drift")
def monitor_drift(
    source: Annotated[str | None, typer.Option(
        help="Current window: predictions (customers scored in the last monitoring.drift_window_hours), "
             "snapshot (every customer as of the newest state) or auto [monitoring.drift_source].")] = None,
    retrain: Annotated[bool | None, typer.Option(
        "--retrain/--no-retrain", help="Start a training run when drifted [monitoring.retrain_on_drift].")] = None,
) -> None:
    """Drift of the current features and predictions against the champion's reference (Evidently + PSI).

    Saves the HTML report, logs it to MLflow (<experiment>-monitoring), exports Prometheus figures
    (<data_dir>/monitoring/drift.prom), posts alerts to monitoring.webhook_url, and applies the
    drift -> retraining policy.
    """
    from mlflow.exceptions import MlflowException

    from activity.retraining import drift_then_retrain
    from monitoring.drift import SOURCES

    cfg = settings()
    if source is not None and source not in (*SOURCES, "auto"):
        raise fail(f"--source must be one of {', '.join((*SOURCES, 'auto'))}, not {source!r}")
    try:
        with console.status("drift") as status:
            outcome = drift_then_retrain(cfg, source=source, retrain=retrain, progress=lambda step: status.update(step))
    except USER_ERRORS + (MlflowException, OSError) as exc:
        raise fail(f"drift run failed: {exc}") from None
    _print_drift(outcome)


def _print_drift(outcome) -> None:  # monitoring.drift.DriftOutcome
    f = outcome.figures
    table = Table("feature", "drift score", "method", "PSI", "drifted", title=outcome.summary())
    for name in sorted(f.scores, key=lambda n: -f.psi[n]):
        table.add_row(name, f"{f.scores[name]:.3f}", f.methods[name], f"{f.psi[name]:.3f}",
                      "[red]yes[/red]" if name in f.drifted else "")
    table.add_row("(activity score)", f"{f.prediction_score:.3f}", f.prediction_method, "",
                  "[red]yes[/red]" if f.prediction_detected else "")
    console.print(table)
    for alert in outcome.alerts:
        console.print(f"[yellow]alert[/yellow] {alert.name}: {alert.summary}"
                      + ("" if outcome.alerts_delivered else " [red](webhook failed)[/red]"))
    if outcome.retrain:
        console.print(f"retraining: {outcome.retrain}")
    console.print(f"report: {outcome.report_path}  ·  MLflow run {outcome.run_id}  ·  {outcome.seconds:.1f} s")


@app.command("schedule")
def monitor_schedule(
    max_runs: Annotated[int | None, typer.Option(help="Stop after this many runs (default: run forever).")] = None,
) -> None:
    """Run drift, online quality, calibration and the estimate on their crons (monitoring.*_schedule).

    Serves the jobs' Prometheus metrics on 127.0.0.1:monitoring.metrics_port; Ctrl-C stops.
    """
    from prometheus_client import start_http_server

    from activity.retraining import drift_then_retrain
    from monitoring.calibration_job import run_calibration
    from monitoring.estimate_job import run_estimate
    from monitoring.quality import run_quality
    from training.schedule import CronJob, run_jobs

    cfg = settings()
    m = cfg.monitoring
    if m.metrics_port:
        try:
            start_http_server(m.metrics_port, addr=m.metrics_host)
        except OSError as exc:
            raise fail(f"cannot serve metrics on {m.metrics_host}:{m.metrics_port} (monitoring.metrics_host, "
                       f"monitoring.metrics_port): {exc}") from None
        console.print(f"metrics on http://{m.metrics_host}:{m.metrics_port}/metrics")
    jobs = [
        CronJob("drift", m.drift_schedule, lambda: drift_then_retrain(cfg).summary()),
        CronJob("quality", m.quality_schedule,
                lambda: f"{run_quality(cfg).matured:,} matured predictions scored"),
        CronJob("calibration", m.calibration_schedule,
                lambda: "; ".join(f"v{r.version}: {r.refit}" for r in run_calibration(cfg)) or "nothing matured"),
        CronJob("estimate", m.estimate_schedule,
                lambda: f"{len(run_estimate(cfg).groups)} groups estimated"),
    ]
    try:
        run_jobs(jobs, max_runs=max_runs, on_event=lambda line: console.print(f"[dim]·[/dim] {line}"))
    except KeyboardInterrupt:
        console.print("schedule stopped")


@app.command("estimate")
def monitor_estimate(
    source: Annotated[str | None, typer.Option(
        help="Answers: predictions (logged in the last monitoring.drift_window_hours), snapshot (the champion on "
             "every customer as of the newest state) or auto [monitoring.drift_source].")] = None,
) -> None:
    """Quality before the labels arrive: CBPE from the calibrated probabilities, per model version and A/B arm.

    Reports to Prometheus (<data_dir>/monitoring/estimate.prom), MLflow (<experiment>-monitoring) and the alert
    webhook (ActivityEstimatedQualityDrop, by monitoring.estimate_alert_auc_drop).
    """
    from mlflow.exceptions import MlflowException

    from activity.estimate_report import print_estimate
    from monitoring.estimate_job import run_estimate

    cfg = settings()
    if source is not None and source not in ("auto", "predictions", "snapshot"):
        raise fail(f"--source must be one of auto, predictions, snapshot, not {source!r}")
    try:
        report = run_estimate(cfg, source=source)
    except USER_ERRORS + (MlflowException, OSError) as exc:
        raise fail(f"estimate failed: {exc}") from None
    print_estimate(console, report)


@app.command("calibrate")
def monitor_calibrate() -> None:
    """Calibration on matured answers per version (ECE), and the monitor's calibration maps refit on them."""
    from activity.estimate_report import print_calibration
    from monitoring.calibration_job import run_calibration

    cfg = settings()
    try:
        results = run_calibration(cfg)
    except USER_ERRORS + (OSError,) as exc:
        raise fail(f"calibration failed: {exc}") from None
    print_calibration(console, results)


def _since(text: str | None, now: datetime) -> datetime | None:
    """``30d`` / ``12h`` before ``now``, or an ISO 8601 time (UTC when it has no offset)."""
    if text is None:
        return None
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)([dh])", text.strip())
    if relative:
        amount = float(relative[1])
        return now - (timedelta(days=amount) if relative[2] == "d" else timedelta(hours=amount))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since must be like 30d, 12h or an ISO 8601 time, not {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("quality")
def monitor_quality(
    since: Annotated[str | None, typer.Option(
        help="Predictions logged since: 30d, 12h or an ISO 8601 time (default: the whole log).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the report as Markdown.")] = False,
) -> None:
    """Online quality: matured predictions against their realized outcomes, per model version and A/B arm.

    Reports to Prometheus (and <data_dir>/monitoring/quality.prom), MLflow (<experiment>-monitoring) and the alert
    webhook (when the champion's online macro-F1 falls too far below its test macro-F1).
    """
    from mlflow.exceptions import MlflowException

    from monitoring.quality import run_quality

    cfg = settings()
    now = datetime.now(UTC)
    try:
        report = run_quality(cfg, since=_since(since, now), now=now)
    except USER_ERRORS + (MlflowException, OSError) as exc:
        raise fail(f"online quality failed: {exc}") from None
    if markdown:
        print(report.markdown(), end="")
        return
    _print_quality(report)


def _print_quality(report) -> None:  # monitoring.quality.QualityReport
    from activity.estimate_report import print_estimated_beside_realized
    from model_contract.labels import CLASSES

    def cell(values: dict[str, float], name: str) -> str:
        value = values.get(name, float("nan"))
        return "n/a" if value != value else f"{value:.4f}"

    through = report.matured_through
    console.print(f"[dim]{report.window}; as_of through {through or '-'} matured "
                  f"({report.horizon_days}-day horizon)[/dim]")
    console.print("[dim]prediction log: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in report.funnel.items())
                  + "[/dim]")
    if not report.groups:
        console.print("no prediction has matured yet: nothing to score")
    else:
        names = ["accuracy", "macro_precision", "macro_recall", "macro_f1", *[f"f1_{c}" for c in CLASSES], "roc_auc"]
        table = Table("version", "arm", "n", "accuracy", "precision", "recall", "macro-F1",
                      *[f"F1 {c}" for c in CLASSES], "ROC-AUC", title="online quality of matured predictions")
        for group in report.groups:
            values = group.values()
            cells = [cell(values, n) for n in names] if group.scored else \
                [f"too few (< {report.min_predictions})", *[""] * (len(names) - 1)]
            table.add_row(group.version, group.arm, f"{group.n:,}", *cells)
        console.print(table)
        print_estimated_beside_realized(console, report)
        console.print(f"A/B: {report.arm_test.summary()}" if report.arm_test is not None else
                      "A/B: no test (both arms need a scored group)")
    if report.champion_version is not None and report.champion_test_macro_f1 is not None:
        console.print(f"champion v{report.champion_version}: test macro-F1 {report.champion_test_macro_f1:.4f}")
    for alert in report.alerts:
        delivered = "" if report.alerts_delivered else " (webhook did not accept it)"
        console.print(f"[yellow]alert {alert.name}[/yellow]: {alert.summary}{delivered}")
    console.print(f"[dim]MLflow run {report.run_id}[/dim]")
