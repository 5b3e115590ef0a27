"""`activity backtest`: a file of real transactions through the platform's code, the model against the classics."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table

from activity.commands.common import (
    USER_ERRORS,
    AmountColumn,
    CustomerColumn,
    HeaderOption,
    TimeColumn,
    TimeFormatOption,
    TimezoneOption,
    TransactionColumn,
    console,
    fail,
    settings,
)
from activity.commands.train import _TrainingProgress

if TYPE_CHECKING:
    from training.backtest import BacktestReport


class Target(StrEnum):
    change = "change"
    active = "active"


def backtest(
    file: Annotated[Path, typer.Argument(help="CSV (.tsv, .txt, .gz), parquet or Excel (.xlsx) file of transactions.")],
    customer: CustomerColumn = "customer_id",
    time: TimeColumn = "event_time",
    amount: AmountColumn = "amount",
    transaction: TransactionColumn = None,
    target: Annotated[Target, typer.Option(help=(
        "What is predicted: change = grow, hold or cut back over the horizon; active = any transaction in it "
        "(model_contract.labels)."))]
    = Target.change,
    horizon_days: Annotated[int | None, typer.Option(help="The label horizon (default: training.horizon_days).")]
    = None,
    timezone: TimezoneOption = "UTC",
    time_format: TimeFormatOption = None,
    header: HeaderOption = True,
    work_dir: Annotated[Path | None, typer.Option(help=(
        "Keep the scratch feature store here (default: a temporary directory, removed at the end)."))] = None,
) -> None:
    """Backtest on a file of real transactions: the contract, the backfill and the trainer on a time split; every
    model and baseline side by side; an MLflow run; one JSON line of figures at the end."""
    from streaming.publish import ColumnMapping, ReplayDefaults
    from training.backtest import BacktestSource
    from training.backtest import backtest as run_backtest

    cfg = settings()
    if horizon_days is not None and not 1 <= horizon_days <= 365:
        raise fail(f"--horizon-days must be between 1 and 365, not {horizon_days}")
    source = BacktestSource(file, ColumnMapping(customer, time, amount, transaction),
                            ReplayDefaults(timezone=timezone, time_format=time_format, header=header))
    reporter = _TrainingProgress()
    try:
        with reporter.progress:
            report = run_backtest(cfg, source, target=target.value, horizon_days=horizon_days, work_dir=work_dir,
                                  reporter=reporter)
    except USER_ERRORS + (FileNotFoundError,) as exc:
        raise fail(f"backtest failed: {exc}") from None
    if report.rejected:
        console.print("refused by the contract: " + ", ".join(f"{code} {n:,}" for code, n in
                                                              sorted(report.rejected.items())))
    for name, reason in report.skipped.items():
        console.print(f"[yellow]{name} skipped[/yellow]: {reason}")
    columns = {"roc_auc": "ROC-AUC", "macro_f1": "macro-F1", "pr_auc": "PR-AUC", "log_loss": "log loss", "ece": "ECE"}
    title = (f"{report.target} over {report.horizon_days} days, test {report.windows['test']}: "
             f"{report.rows['test']:,} rows of {report.customers:,} customers")
    console.print(_metrics_table(report, columns, title))
    if report.target == "active":  # how the predicted purchase counts rank and match the actual ones
        console.print(_metrics_table(report, {"count_spearman": "Spearman", "count_mae": "MAE"},
                                     "purchases in the horizon: predicted count (or P(active)) vs actual"))
    if report.forecast:
        f = {k: v for k, v in report.forecast.items() if k != "model"}
        nan = float("nan")
        console.print(f"the scorer's forecast ({report.forecast['model']}, from the features): P(active) ROC-AUC "
                      f"{f.get('test_roc_auc', nan):.4f}, log loss {f.get('test_log_loss', nan):.4f}; expected "
                      f"transactions MAE {f.get('test_count_mae', nan):.3f}, Spearman "
                      f"{f.get('test_count_spearman', nan):.4f} on {int(f.get('test_rows', 0)):,} test rows")
    console.print(f"[dim]MLflow run {report.run_id}[/dim]")
    print(json.dumps(report.summary()), flush=True)


def _metrics_table(report: BacktestReport, columns: dict[str, str], title: str) -> Table:
    table = Table(Column("model", no_wrap=True), *columns.values(), title=title)
    for name, m in report.metrics.items():
        table.add_row(name, *(f"{m.get(k, float('nan')):.4f}" for k in columns),
                      style="bold" if name == report.model else None)
    return table
