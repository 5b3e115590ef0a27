"""`activity topic`: what is on the topics.

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

app = typer.Typer(help="Look at what is on the topics.", no_args_is_help=True)


@app.command("stats")
def topic_stats() -> None:
    """Messages stored per topic and partition."""
    from infra.reachability import kafka_requirement, require
    from infra.topics import topic_names, topic_offsets

    cfg = settings()
    table = Table("topic", "partition", "first offset", "next offset", "messages")
    try:
        require(kafka_requirement(cfg.kafka))
        for name in topic_names(cfg.kafka):
            for partition, (low, high) in topic_offsets(cfg.kafka, name).items():
                table.add_row(name, str(partition), f"{low:,}", f"{high:,}", f"{high - low:,}")
    except USER_ERRORS as exc:
        raise fail(exc) from None
    console.print(table)


@app.command("tail")
def topic_tail(
    topic: Annotated[str | None, typer.Option(help="Topic (default: transactions).")] = None,
    count: Annotated[int, typer.Option(help="Stop after this many messages.")] = 10,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    idle: Annotated[float, typer.Option(help="Stop after this many seconds without a message.")] = 10.0,
) -> None:
    """Print messages as they arrive."""
    from streaming.consume import read_topic

    cfg = settings()
    name = topic or cfg.kafka.topics.transactions
    try:
        for record in read_topic(cfg.kafka, name, from_beginning=from_beginning, limit=count,
                                 idle_timeout_s=idle):
            key = record.key.decode(errors="replace") if record.key else "-"
            value = record.value.decode(errors="replace") if record.value else ""
            console.print(f"[dim]{name}[{record.partition}]@{record.offset}[/dim] {key} {value}",
                          markup=True, highlight=False, soft_wrap=True)
    except USER_ERRORS as exc:
        raise fail(exc) from None
