"""`activity stack`: start, stop and inspect the local stack (the Kafka broker, optionally Prometheus).

Each command imports its part when it runs, so `activity --help` starts without loading it.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from activity.commands.common import (
    USER_ERRORS,
    console,
    fail,
    settings,
)

app = typer.Typer(help="Start, stop and inspect the local stack (Kafka broker).", no_args_is_help=True)


@app.command("up")
def stack_up(
    with_prometheus: Annotated[bool, typer.Option(
        "--with-prometheus", help="Also run a local Prometheus (Debian package `prometheus`) scraping the services "
                                  "with infra/prometheus's config and alert rules.")] = False,
    prometheus_port: Annotated[int, typer.Option(min=1, max=65535,
                                                 help="Listen port of that Prometheus (on 127.0.0.1).")] = 9090,
) -> None:
    """Start the embedded Kafka broker (unless kafka.bootstrap_servers names a cluster) and create topics."""
    from infra.stack import stack_up as start

    cfg = settings()
    try:
        statuses = start(cfg, report=lambda line: console.print(f"[dim]·[/dim] {line}"),
                         with_prometheus=with_prometheus, prometheus_port=prometheus_port)
    except USER_ERRORS as exc:
        raise fail(exc) from None
    _print_statuses(statuses)


@app.command("down")
def stack_down() -> None:
    """Stop exactly the processes `stack up` started (broker, Prometheus); the data stays for the next `up`."""
    from infra.stack import stack_down as stop

    stopped = stop(settings())
    console.print("stopped: " + ", ".join(stopped) if stopped else "nothing of ours was running")


@app.command("status")
def stack_status() -> None:
    """Say what runs where (Prometheus too, when `stack up --with-prometheus` started it)."""
    from infra.stack import stack_status as status

    statuses = status(settings())
    _print_statuses(statuses)
    if not all(s.running for s in statuses):
        raise typer.Exit(3)


def _print_statuses(statuses: list) -> None:  # list[ServiceStatus]
    table = Table("service", "state", "where", "detail")
    for status in statuses:
        state = "[green]running[/green]" if status.running else "[red]down[/red]"
        table.add_row(status.name, state, status.where, status.detail)
    console.print(table)
