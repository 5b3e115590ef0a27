"""The top-level commands: the effective settings, the whole platform (`up`), the demo and the benchmarks.

Each command imports its part when it runs, so `activity --help` starts without loading the platform.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from activity.commands.common import (
    USER_ERRORS,
    console,
    fail,
    settings,
)
from activity_settings import settings_environment, settings_reference


def show_settings(
    reference: Annotated[bool, typer.Option(
        "--reference", help="Print every setting with its environment variable, default and description.")] = False,
) -> None:
    """Print the effective settings (after the YAML file and environment variables)."""
    if reference:
        print(settings_reference(), end="")
        return
    print(settings().model_dump_json(indent=2))


def up(
    customers: Annotated[int, typer.Option(help="Simulated population.")] = 2_000,
    history_days: Annotated[int, typer.Option(help="Days of history published on a fresh data directory.")] = 200,
    rate: Annotated[float, typer.Option(help="Live transactions per second from the simulated upstream.")] = 20.0,
    duration: Annotated[float | None, typer.Option(help="Stop by itself after this many seconds.")] = None,
    with_prometheus: Annotated[bool, typer.Option(
        "--with-prometheus", help="Also start a local Prometheus (Debian package) with the alert rules.")] = False,
) -> None:
    """The whole platform on the embedded default: broker, streaming job, scorer, retraining and monitoring
    schedulers, and a simulated upstream at a steady rate, with a live status line; Ctrl-C stops everything.

    Exit code 1 when a service logged an error while it ran."""
    from activity.up import run_up

    if rate <= 0:
        raise fail(f"--rate must be positive, not {rate}")
    if history_days < 150:
        raise fail("--history-days must be at least 150: the first champion is trained on that history")
    try:
        errors = run_up(settings(), console, customers=customers, history_days=history_days, rate=rate,
                        duration_s=duration, with_prometheus=with_prometheus)
    except USER_ERRORS as exc:
        raise fail(exc) from None
    if errors:
        raise typer.Exit(1)


def demo(
    customers: Annotated[int, typer.Option(help="Population size.")] = 2_000,
    days: Annotated[int, typer.Option(help="Days of history before the shift (at least 150 to train on).")] = 200,
    shift_days: Annotated[int, typer.Option(help="Days of the shifted population.")] = 28,
) -> None:
    """The platform's story on the embedded default, exiting by itself: simulate -> stream -> train -> promote ->
    score over REST -> shift the population -> drift alert -> retrain; a summary with figures and report paths."""
    from activity.demo import run_demo

    if days < 150:
        raise fail("--days must be at least 150: training needs a 30-day horizon on both sides of several "
                   "weekly as_of dates, split into train, validation and test with gaps")
    try:
        run_demo(settings(), console, customers=customers, days=days, shift_days=shift_days)
    except USER_ERRORS as exc:
        raise fail(exc) from None


def bench(
    only: Annotated[str | None, typer.Option(
        help=("Comma-separated benchmarks to run: produce, ingest, keyed_state, model_quality, train, serve, estimate, "
              "triton_protocol, backtest (default: all)."))] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Small sizes: a smoke run in minutes, labelled as such in the report.")] = False,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <data_dir>/bench/<UTC time>).")] = None,
) -> None:
    """Run the benchmarks under bench/, one after another, and write a report folder: report.md (figures against
    their targets, met or missed), PNG plots (throughput, freshness, latency, model quality) and a log per benchmark."""
    from activity.bench_report import run_report, select

    cfg = settings()
    try:
        names = select(only)
    except ValueError as exc:
        raise fail(exc) from None
    folder = out or cfg.home / "bench" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    env = ({k: v for k, v in os.environ.items() if not k.startswith("ACTIVITY_")} | settings_environment(cfg)
           | {"ACTIVITY_DATA_DIR": str(cfg.home)})  # the benchmarks run from the source tree, not this directory
    console.print(f"{'quick run of' if quick else 'running'} {', '.join(names)}; report in {folder}")
    with console.status("starting") as status:
        report, results = run_report(names, folder, quick=quick, env=env, progress=status.update,
                                     report=lambda line: console.print(f"[dim]·[/dim] {line}"))
    console.print(f"report: {report}")
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise fail(f"{', '.join(failed)} failed; the report has the exit code and the log's tail")
