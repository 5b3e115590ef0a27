"""`activity stream`: the Spark Structured Streaming job and the backfill that rebuilds its history.

Each command imports its part when it runs, so `activity --help` starts without loading Spark.
"""

from __future__ import annotations

from typing import Annotated

import typer

from activity.commands.common import (
    USER_ERRORS,
    configure_logging,
    console,
    fail,
    progress_bar,
    settings,
)

app = typer.Typer(help="The streaming job: transactions -> Feast features.", no_args_is_help=True)


@app.command("run")
def stream_run(
    until_idle: Annotated[float | None, typer.Option(help="Stop once caught up and idle this many seconds.")] = None,
) -> None:
    """Run the Spark Structured Streaming job until Ctrl-C (restart-safe: it resumes from its checkpoint)."""
    from streaming.runner import run_stream

    cfg = settings()
    configure_logging(cfg)
    try:
        summary = run_stream(cfg, until_idle_s=until_idle, report=lambda line: console.print(f"[dim]·[/dim] {line}"))
    except USER_ERRORS as exc:
        raise fail(exc) from None
    console.print(f"stopped after {summary.batches} batches, {summary.input_rows:,} records"
                  + (" (caught up)" if summary.caught_up else ""))


@app.command("backfill")
def stream_backfill(
    source: Annotated[str, typer.Option(help="archive (raw archive) or kafka (topic from its start).")] = "archive",
    reconcile: Annotated[bool, typer.Option(help="Rebuild only customers touched by late events.")] = False,
) -> None:
    """Rebuild the feature history in batch Spark with the stream's code (idempotent)."""
    from streaming.backfill import run_backfill

    cfg = settings()
    configure_logging(cfg)
    if source not in ("archive", "kafka"):
        raise fail(f"--source must be archive or kafka, not {source!r}")
    try:
        with progress_bar() as progress:
            task = progress.add_task("days rebuilt", total=None)
            summary = run_backfill(cfg, source=source, reconcile=reconcile,
                                   progress=lambda done, total: progress.update(task, completed=done, total=total))
    except USER_ERRORS + (FileNotFoundError,) as exc:
        raise fail(exc) from None
    console.print(f"rebuilt {summary.customers:,} customers from {summary.events:,} events over {summary.days} days; "
                  f"{summary.offline_rows:,} offline rows")
