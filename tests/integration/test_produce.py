"""Producers against the real broker; the topic read back with confluent-kafka and Spark."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from activity_settings import Settings
from infra.topics import topic_offsets
from streaming.consume import read_topic
from streaming.publish import publish_simulation
from streaming.simulator import make_population, simulate
from tests.conftest import settings_env

pytestmark = pytest.mark.integration


def _stored(settings: Settings) -> int:
    return sum(high - low for low, high in topic_offsets(settings.kafka, settings.kafka.topics.transactions).values())


@pytest.fixture(scope="module")
def simulated(kafka_stack: Settings) -> dict[str, list[str]]:
    """Publish >= 100k simulated events once; return the sent transaction ids per customer."""
    before = _stored(kafka_stack)
    assert before == 0, "this module expects an empty transactions topic"
    population = make_population(20_000, kafka_stack.simulation.start, 16, seed=11)
    sent: dict[str, list[str]] = defaultdict(list)
    total = 0
    for table in simulate(population):
        for customer, transaction in zip(table["customer_id"].to_pylist(), table["transaction_id"].to_pylist(),
                                         strict=True):
            sent[customer].append(transaction)
        total += table.num_rows
    assert total >= 100_000
    report = publish_simulation(kafka_stack.kafka, population)
    assert report.queued == total
    assert report.delivered == total and report.failed == 0 and report.undelivered == 0
    return sent


def test_every_event_arrives_keyed_by_customer_in_order_per_key(kafka_stack: Settings, simulated) -> None:
    received: dict[str, list[str]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    count = 0
    for record in read_topic(kafka_stack.kafka, kafka_stack.kafka.topics.transactions, idle_timeout_s=5):
        value = json.loads(record.value)
        assert record.key.decode() == value["customer_id"]
        received[value["customer_id"]].append(value["transaction_id"])
        partitions_of[value["customer_id"]].add(record.partition)
        count += 1
    assert count == sum(len(ids) for ids in simulated.values())
    assert all(len(parts) == 1 for parts in partitions_of.values())  # a key stays on one partition
    assert received == simulated  # same events per key, in the order sent


def test_spark_reads_the_topic_through_the_connector(kafka_stack: Settings, simulated, spark) -> None:
    frame = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_stack.kafka.bootstrap)
        .option("subscribe", kafka_stack.kafka.topics.transactions)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )
    assert frame.count() == sum(len(ids) for ids in simulated.values())
    keys = frame.selectExpr("CAST(key AS STRING) AS k").distinct().count()
    assert keys == len(simulated)


def test_cli_replay_streams_a_csv_file(kafka_stack: Settings, simulated, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    pd.DataFrame({
        "cust": [f"r{i % 7}" for i in range(500)],
        "ts": pd.date_range("2026-01-01", periods=500, freq="min", tz="UTC").astype(str),
        "amt": [1.0 + i for i in range(500)],
    }).to_csv(path, index=False)
    before = _stored(kafka_stack)
    result = subprocess.run(
        [sys.executable, "-m", "activity", "produce", "replay", str(path),
         "--customer", "cust", "--time", "ts", "--amount", "amt"],
        env=settings_env(kafka_stack), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "500" in result.stdout
    assert _stored(kafka_stack) - before == 500
