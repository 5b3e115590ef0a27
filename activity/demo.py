"""`activity demo`: a bounded scenario on the embedded default that exits by itself.

It covers what the platform has so far: start the stack, publish a simulated population's
last weeks of transactions with some malformed ones mixed in, stream them into Feast, then
read features for a few customers online and check them against the point-in-time offline
path. Each run works in its own area (``<data_dir>/demo``, fresh topics), so it can be re-run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pandas as pd
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from activity_settings import Settings, StreamingSettings, TopicSettings
from features.store import FeatureWriter, historical_features, online_features
from infra.stack import stack_up
from infra.topics import ensure_topics, topic_offsets
from streaming.consume import read_topic
from streaming.publish import Pace, publish_simulation
from streaming.runner import run_stream
from streaming.simulator import make_population

DEMO_TOPIC_PREFIX = "demo-"
MALFORMED = [
    b'{"schema_version": 1, "amount": ',
    b'{"schema_version": 1, "transaction_id": "x1", "customer_id": "c1", "amount": -5, "currency": "EUR", '
    b'"event_time": "2026-01-01T00:00:00Z", "merchant_id": "m1", "merchant_category": "fuel", "channel": "atm"}',
    b"not json at all",
]


def demo_settings(settings: Settings, tag: str) -> Settings:
    topics = TopicSettings(transactions=f"{DEMO_TOPIC_PREFIX}{tag}-transactions",
                           dlq=f"{DEMO_TOPIC_PREFIX}{tag}-transactions.dlq",
                           predictions=f"{DEMO_TOPIC_PREFIX}{tag}-predictions")
    return settings.model_copy(update={
        "data_dir": settings.home / "demo" / tag,
        "kafka": settings.kafka.model_copy(update={"topics": topics}),
        "streaming": StreamingSettings(**{**settings.streaming.model_dump(), "trigger_interval_s": 0.0,
                                          "metrics_port": 0}),
    })


def _drop_old_demos(settings: Settings, keep: str) -> None:
    admin = AdminClient(settings.kafka.client_config())
    old = [name for name in admin.list_topics(timeout=10).topics
           if name.startswith(DEMO_TOPIC_PREFIX) and not name.startswith(f"{DEMO_TOPIC_PREFIX}{keep}")]
    if old:
        for future in admin.delete_topics(old, operation_timeout=30).values():
            future.result()


def run_demo(settings: Settings, console: Console, customers: int, days: int) -> None:
    step = _Steps(console)
    with step("start the stack"):
        stack_up(settings, report=lambda line: console.print(f"  [dim]{line}[/dim]"))
    tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    demo = demo_settings(settings, tag)
    _drop_old_demos(settings, keep=tag)
    ensure_topics(demo.kafka)
    console.print(f"  [dim]demo area {demo.home}, topic {demo.kafka.topics.transactions}[/dim]")

    today = datetime.now(UTC).date()
    sim = settings.simulation
    population = make_population(customers, today - timedelta(days=days), days, sim.seed, sim.mean_daily_rate)
    with step(f"publish {days} days of {customers:,} simulated customers, plus {len(MALFORMED)} malformed events"):
        report = publish_simulation(demo.kafka, population, pace=Pace())
        producer = Producer(demo.kafka.client_config())
        for value in MALFORMED:
            producer.produce(demo.kafka.topics.transactions, value, b"demo")
        producer.flush(30)
        console.print(f"  delivered {report.delivered:,} of {report.queued:,} at {report.rate:,.0f} events/s")
        if report.delivered != report.queued:
            raise RuntimeError(f"{report.queued - report.delivered} events were not delivered")

    with step("stream them into Feast (Spark Structured Streaming)"):
        summary = run_stream(demo, until_idle_s=2.0, report=lambda line: console.print(f"  [dim]{line}[/dim]"))
        stored = sum(high - low for low, high in topic_offsets(demo.kafka, demo.kafka.topics.dlq).values())
        console.print(f"  {summary.input_rows:,} records in {summary.batches} micro-batches; "
                      f"{stored} dead letters on {demo.kafka.topics.dlq}")
        for record in read_topic(demo.kafka, demo.kafka.topics.dlq, limit=len(MALFORMED), idle_timeout_s=3):
            console.print(f"  [dim]dead letter[/dim] {record.header('error_code')}: {record.header('error_message')}",
                          highlight=False)
        if stored != len(MALFORMED):
            raise RuntimeError(f"expected {len(MALFORMED)} dead letters, found {stored}")

    with step("read features online and check them against the offline store"):
        store = FeatureWriter.open(demo).store
        sample = list(population.customer_ids[:5]) + ["never-seen-customer"]
        now = int(time.time())
        online = online_features(store, sample, [now] * len(sample))
        table = Table("customer", "tx 7d", "tx 30d", "spend 30d", "days since last", "trend 30d", "online share")
        for row in online.itertuples(index=False):
            table.add_row(row.customer_id, f"{row.tx_count_7d:.0f}", f"{row.tx_count_30d:.0f}",
                          f"{row.spend_30d:,.2f}", f"{row.days_since_last_tx:.1f}", f"{row.trend_count_30d:+.2f}",
                          f"{row.share_online_90d:.0%}")
        console.print(table)
        entities = pd.DataFrame({"customer_id": sample, "event_timestamp": pd.to_datetime([now] * len(sample),
                                                                                           unit="s", utc=True)})
        offline = historical_features(store, entities).set_index("customer_id").loc[sample]
        same = all((online.set_index("customer_id")[name] - offline[name]).abs().max() < 1e-9
                   for name in ("tx_count_7d", "tx_count_30d", "spend_30d", "days_since_last_tx"))
        console.print("  online features == point-in-time offline features: "
                      + ("[green]yes[/green]" if same else "[red]no[/red]"))
        if not same:
            raise RuntimeError("online and offline features differ")
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
