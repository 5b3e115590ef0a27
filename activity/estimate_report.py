"""What `activity monitor estimate` and `activity monitor calibrate` print: their reports as tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from model_contract.labels import CLASSES
from monitoring.calibration_job import VersionCalibration
from monitoring.estimate_job import EstimateReport
from monitoring.quality import QualityReport


def print_estimate(console: Console, report: EstimateReport) -> None:
    """One row per version and arm: the estimated figures with their 95 % bands, class shares, the test figure."""
    table = Table("version", "arm", "answers", "est. ROC-AUC", "95 % band", "test ROC-AUC", "est. macro-F1",
                  "95 % band", *[f"share {name}" for name in CLASSES], "calibration",
                  title=f"estimated quality (CBPE) of {report.detail}")
    for group in report.groups:
        e = group.estimate
        table.add_row(group.version, group.arm, f"{e.rows:,}", f"{e.roc_auc:.4f}",
                      f"{e.roc_auc_band.low:.3f}..{e.roc_auc_band.high:.3f}",
                      "n/a" if group.test_roc_auc is None else f"{group.test_roc_auc:.4f}", f"{e.macro_f1:.4f}",
                      f"{e.macro_f1_band.low:.3f}..{e.macro_f1_band.high:.3f}",
                      *[f"{e.share[name]:.3f}" for name in CLASSES],
                      f"map on {group.calibration_rows:,}" if group.calibration_rows else "as trained")
    console.print(table)
    for name, rows in report.skipped.items():
        console.print(f"[dim]{name}: {rows} answers, too few to estimate (monitoring.estimate_min_rows)[/dim]")
    for alert in report.alerts:
        delivered = "" if report.alerts_delivered else " (webhook did not accept it)"
        console.print(f"[yellow]alert {alert.name}[/yellow]: {alert.summary}{delivered}")
    console.print(f"[dim]MLflow run {report.run_id}[/dim]")


def print_calibration(console: Console, results: list[VersionCalibration]) -> None:
    if not results:
        console.print("no matured answer yet: nothing to calibrate on")
        return
    table = Table("version", "matured answers", "ECE", "ECE through the map", "log loss", "log loss through the map",
                  "refit", title="calibration on matured answers")
    for r in results:
        c = r.check
        table.add_row(r.version, f"{c.rows:,}", f"{c.ece:.4f}", f"{c.ece_mapped:.4f}", f"{c.log_loss:.4f}",
                      f"{c.log_loss_mapped:.4f}", r.refit)
    console.print(table)


def print_estimated_beside_realized(console: Console, report: QualityReport) -> None:
    """For ``monitor quality``: per scored group, what the answers' probabilities promised beside what happened."""
    table = Table("version", "arm", "estimated ROC-AUC", "realized ROC-AUC", "estimated macro-F1", "realized macro-F1",
                  title="estimated (CBPE, from the answers' probabilities) beside realized")
    for group in report.groups:
        estimated = report.estimated.get(f"{group.version}/{group.arm}")
        if estimated is None or not group.scored:
            continue
        values = group.values()
        table.add_row(group.version, group.arm, *[_cell(v) for v in (
            estimated["estimated_roc_auc"], values["roc_auc"], estimated["estimated_macro_f1"], values["macro_f1"])])
    if table.row_count:
        console.print(table)


def _cell(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"
