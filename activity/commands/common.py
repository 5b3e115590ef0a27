"""What every command shares: the consoles, the settings, progress bars, and how an error reaches the user.

A command catches ``USER_ERRORS`` (the platform's ``ActivityError`` and the few library errors
whose message a user can act on) and prints the message as one line with exit code 1, never a
traceback; a bad setting exits with code 2.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from activity_settings import ActivityError, Settings, SettingsError, load_settings

console = Console()
# An error is one line whatever the terminal's width: rich would otherwise break it at the width of
# whichever of stdin/stdout/stderr is a terminal (or $COLUMNS), splitting a setting's name or a command.
err_console = Console(stderr=True, soft_wrap=True)


class UserError(ActivityError):
    """A command-line argument the user can fix; exit code 1."""


USER_ERRORS: tuple[type[Exception], ...] = (ActivityError, KafkaException, KeyError, ValueError)


# The columns of a file of real transactions, as `produce replay` and `backtest` read it.
CustomerColumn = Annotated[str, typer.Option("--customer", help="Column with the customer id.")]
TimeColumn = Annotated[str, typer.Option("--time", help="Column with the event time.")]
AmountColumn = Annotated[str, typer.Option("--amount", help=(
    "Column with the amount (negative: a refund), or two to multiply: --amount 'Quantity*Price'. Currency signs, "
    "thousands separators, decimal commas and (12.50) are read."))]
TransactionColumn = Annotated[str | None, typer.Option("--transaction", help=(
    "Column with a transaction id; rows sharing one (and the customer) are one transaction's lines: "
    "their amounts are summed."))]
TimezoneOption = Annotated[str, typer.Option("--timezone", help="Time zone of times without an offset.")]
TimeFormatOption = Annotated[str | None, typer.Option("--time-format", help=(
    "strptime format of the time column, e.g. %d.%m.%Y; default: ISO 8601, YYYYMMDD and the common "
    "spellings are recognized."))]
HeaderOption = Annotated[bool, typer.Option("--header/--no-header", help=(
    "The file's first row names its columns; with --no-header, name columns by position: --customer 1."))]


def settings() -> Settings:
    """The effective settings, or exit code 2 with the bad setting named."""
    try:
        return load_settings()
    except SettingsError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def fail(message: object) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def configure_logging(cfg: Settings) -> None:
    """Log lines of a long-running command at ``log_level``; py4j's chatter only from warnings up."""
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)


class RateColumn(ProgressColumn):
    """Items per second of a progress bar's task."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:>10,.0f}/s" if task.speed else " " * 12)


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeElapsedColumn(), console=console)
