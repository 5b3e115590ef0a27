"""`activity demo`: a bounded scenario on the embedded default that exits by itself.

Today it covers what the platform has so far: start the stack, publish a simulated
population's transactions, and show them arriving on the topic.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from activity_settings import Settings
from infra.stack import stack_up
from infra.topics import topic_offsets
from streaming.consume import read_topic
from streaming.publish import Pace, publish_simulation
from streaming.simulator import make_population


def run_demo(settings: Settings, console: Console, customers: int, days: int) -> None:
    step = _Steps(console)
    with step("start the stack"):
        stack_up(settings, report=lambda line: console.print(f"  [dim]{line}[/dim]"))
    topic = settings.kafka.topics.transactions
    before = sum(high for _, high in topic_offsets(settings.kafka, topic).values())
    sim = settings.simulation
    population = make_population(customers, sim.start, days, sim.seed, sim.mean_daily_rate)
    with step(f"simulate {customers:,} customers over {days} days and publish"):
        report = publish_simulation(settings.kafka, population, pace=Pace())
        console.print(f"  sent {report.queued:,}, delivered {report.delivered:,}, "
                      f"failed {report.failed + report.undelivered:,} at {report.rate:,.0f} events/s")
        if report.delivered != report.queued:
            raise RuntimeError(f"{report.queued - report.delivered} events were not delivered")
    with step("show them arriving"):
        after = topic_offsets(settings.kafka, topic)
        table = Table("partition", "messages on topic")
        for partition, (low, high) in after.items():
            table.add_row(str(partition), f"{high - low:,}")
        console.print(table)
        arrived = sum(high for _, high in after.values()) - before
        console.print(f"  {arrived:,} new messages on `{topic}` (expected {report.delivered:,})")
        if arrived != report.delivered:
            raise RuntimeError(f"{topic} grew by {arrived}, not by the {report.delivered} delivered")
        for record in read_topic(settings.kafka, topic, limit=3, idle_timeout_s=5):
            console.print(f"  [dim]{record.partition}@{record.offset}[/dim] {record.value.decode()}",
                          highlight=False, soft_wrap=True)
    step.summary()
    console.print("The broker keeps running for the next command; `activity stack down` stops it.")


class _Steps:
    """Numbered steps with timings; a failed step is reported before the error propagates."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.done: list[tuple[str, float]] = []

    def __call__(self, title: str) -> _Steps:
        self.title = title
        return self

    def __enter__(self) -> None:
        self.console.rule(f"[bold]{len(self.done) + 1}. {self.title}")
        self.started = time.monotonic()

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        elapsed = time.monotonic() - self.started
        if exc_type is None:
            self.done.append((self.title, elapsed))
            self.console.print(f"[green]✓ done[/green] in {elapsed:.1f}s")
        else:
            self.console.print(f"[red]✗ failed[/red] after {elapsed:.1f}s")

    def summary(self) -> None:
        table = Table("step", "status", "seconds", title="demo summary")
        for title, elapsed in self.done:
            table.add_row(title, "[green]done[/green]", f"{elapsed:.1f}")
        self.console.print(table)
