"""`activity train`: one training run, the retraining schedule, and what the aliases point at.

Each command imports its part when it runs, so `activity --help` starts without loading the trainer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from activity.commands.common import (
    USER_ERRORS,
    console,
    fail,
    settings,
)
from activity_settings import Settings
from training.reporting import Reporter

app = typer.Typer(help="Training: point-in-time sets from Feast, the ensemble, MLflow, the gate.",
                  no_args_is_help=True)


class _TrainingProgress(Reporter):
    """Shows each step of a training run as a line with a spinner, then its time."""

    def __init__(self) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.tasks: dict[str, TaskID] = {}

    def step(self, name: str, detail: str = "") -> None:
        self.tasks[name] = self.progress.add_task(f"{name:<10} {detail}", total=1)

    def done(self, name: str, detail: str = "") -> None:
        self.progress.update(self.tasks[name], completed=1)


def _train_once(cfg: Settings):  # TrainingOutcome
    from training.pipeline import train
    from training.schedule import exclusive_run

    reporter = _TrainingProgress()
    with exclusive_run(cfg), reporter.progress:
        return train(cfg, reporter=reporter)


def _print_outcome(outcome) -> None:  # TrainingOutcome
    table = Table(Column("model", no_wrap=True), "ROC-AUC", "macro-F1", "PR-AUC", "log loss", "ECE", "lift@10%",
                  title=f"test window: {outcome.rows['test']:,} rows (train {outcome.rows['train']:,}, "
                        f"validation {outcome.rows['validation']:,})")
    rows = dict(outcome.metrics)
    if outcome.champion_metrics is not None:
        rows["current champion"] = outcome.champion_metrics
    for name, m in rows.items():
        table.add_row(name, *(f"{m.get(k, float('nan')):.4f}" for k in
                              ("roc_auc", "macro_f1", "pr_auc", "log_loss", "ece", "decline_lift_top_decile")),
                      style="bold" if name == "ensemble" else None)
    console.print(table)
    colour = "green" if outcome.decision.promote else "yellow"
    console.print(f"[{colour}]version {outcome.version} -> {outcome.decision.alias}[/{colour}]: "
                  + "; ".join(outcome.decision.reasons))
    console.print(f"[dim]MLflow run {outcome.run_id}[/dim]")


@app.command("run")
def train_run(
    backend: Annotated[str | None, typer.Option(help="local or spark (default: training.backend).")] = None,
) -> None:
    """Train once: build the training set, fit, evaluate against baselines, register, and gate the champion."""
    cfg = settings()
    if backend is not None:
        if backend not in ("local", "spark"):
            raise fail(f"--backend must be local or spark, not {backend!r}")
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"backend": backend})})
    try:
        outcome = _train_once(cfg)
    except USER_ERRORS + (FileNotFoundError,) as exc:
        raise fail(f"training failed, the champion is unchanged: {exc}") from None
    _print_outcome(outcome)


@app.command("schedule")
def train_schedule(
    max_runs: Annotated[int | None, typer.Option(help="Stop after this many runs (default: run forever).")] = None,
) -> None:
    """Retrain on the cron schedule in training.schedule (UTC); runs never overlap; Ctrl-C stops."""
    from training.schedule import run_schedule

    cfg = settings()

    def once():
        outcome = _train_once(cfg)
        _print_outcome(outcome)
        return outcome

    try:
        run_schedule(cfg, once, max_runs=max_runs, on_event=lambda line: console.print(f"[dim]·[/dim] {line}"))
    except KeyboardInterrupt:
        console.print("schedule stopped")


@app.command("status")
def train_status() -> None:
    """The registered versions behind the champion and challenger aliases, with their test metrics."""
    from mlflow.exceptions import MlflowException

    from infra.reachability import ServiceUnavailable
    from model_contract import registry
    from model_contract.artifacts import CHALLENGER, CHAMPION

    cfg = settings()
    try:
        client = registry.client(cfg)
    except ServiceUnavailable as exc:
        raise fail(exc) from None
    table = Table("alias", "version", "created", "ROC-AUC", "macro-F1", "promotion")
    for alias in (CHAMPION, CHALLENGER):
        try:
            version = client.get_model_version_by_alias(cfg.mlflow.registered_model, alias)
        except MlflowException:
            table.add_row(alias, "-", "", "", "", "")
            continue
        metrics = client.get_run(version.run_id).data.metrics if version.run_id is not None else {}
        created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        table.add_row(alias, str(version.version), created, f"{metrics.get('roc_auc', float('nan')):.4f}",
                      f"{metrics.get('macro_f1', float('nan')):.4f}", version.tags.get("promotion", ""))
    console.print(table)
