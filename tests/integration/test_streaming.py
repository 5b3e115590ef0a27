"""The streaming job on the real stack: Kafka -> Spark -> Feast, with bad input mixed in."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from confluent_kafka import Producer

from activity_settings import Settings
from features.store import FeatureWriter, historical_features, online_features
from features.transform import FEATURE_NAMES
from streaming.consume import read_topic
from streaming.paths import StreamPaths
from streaming.publish import encode_simulated, publish_tables
from streaming.runner import run_stream
from streaming.schema import ErrorCode, Transaction
from streaming.simulator import make_population, simulate
from tests.conftest import free_port
from tests.corpus import malformed
from tests.integration.conftest import isolated
from tests.parity import assert_features_equal

pytestmark = pytest.mark.integration


def send_raw(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    for key, value in values:
        producer.produce(settings.kafka.topics.transactions, value, key)
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def streamed(kafka_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Simulated traffic with a malformed corpus and duplicates in the middle, streamed once."""
    settings = isolated(kafka_stack, tmp_path_factory.mktemp("streaming"), max_offsets_per_trigger=20_000,
                        metrics_port=free_port())
    population = make_population(3_000, date(2026, 1, 1), 60, seed=5)
    tables = list(simulate(population))
    first, second = tables[:45], tables[45:]
    assert publish_tables(settings.kafka, first, encode_simulated).failed == 0
    corpus = malformed("stream")
    resent = pc.take(pa_concat(first[-3:]), list(range(0, 150, 3)))  # 50 accepted events sent again
    duplicates = list(zip(pc.cast(resent["customer_id"], "binary").to_pylist(), encode_simulated(resent), strict=True))
    # A real ledger's other bookings (contract version 2): refunds and reversals are valid events,
    # archived and counted apart, not activity; a zero-amount purchase is a purchase.
    booked = datetime(2026, 2, 14, 12, tzinfo=UTC)  # the last day of the first part: not late
    others = [Transaction(f"ledger-{i}", cid, amount, "EUR", booked, "m00001", "retail", "online", kind=kind)
              for i, (cid, amount, kind) in enumerate(
                  [(cid, -10.0, "refund") for cid in population.customer_ids[:4]]
                  + [(population.customer_ids[4], -3.5, "reversal"), (population.customer_ids[5], 0.0, "purchase")])]
    send_raw(settings, [(b"bad", value) for _, value, _ in corpus] + duplicates
             + [(t.customer_id.encode(), json.dumps(t.to_json()).encode()) for t in others])
    assert publish_tables(settings.kafka, second, encode_simulated).failed == 0

    summary = run_stream(settings, until_idle_s=2.0)
    valid_events = sum(table.num_rows for table in tables) + len(others)
    return {"settings": settings, "summary": summary, "corpus": corpus, "duplicates": duplicates,
            "valid_events": valid_events, "purchases": valid_events - 5, "others": others,
            "population": population, "tables": tables}


def pa_concat(tables: list):
    import pyarrow as pa

    return pa.concat_tables(tables)


def test_every_bad_event_is_dead_lettered_with_its_reason(streamed: dict) -> None:
    settings: Settings = streamed["settings"]
    assert streamed["summary"].caught_up
    letters = list(read_topic(settings.kafka, settings.kafka.topics.dlq, idle_timeout_s=3))
    headers = [{key: record.header(key) for key, _ in record.headers} for record in letters]
    by_value = {record.value: header for record, header in zip(letters, headers, strict=True)}
    for name, value, code in streamed["corpus"]:
        assert value in by_value, f"{name} is not in the DLQ"
        header = by_value[value]
        assert header["error_code"] == code.value, name
        assert header["error_message"]
        assert header["source_topic"] == settings.kafka.topics.transactions
        assert int(header["source_offset"]) >= 0 and int(header["source_partition"]) >= 0
    duplicate_values = sorted(record.value for record, header in zip(letters, headers, strict=True)
                              if header["error_code"] == ErrorCode.DUPLICATE_TRANSACTION.value)
    assert duplicate_values == sorted(value for _, value in streamed["duplicates"])  # the original bytes
    assert len(letters) == len(streamed["corpus"]) + len(streamed["duplicates"])  # each exactly once


def test_every_valid_event_is_counted_and_archived_once(streamed: dict) -> None:
    settings: Settings = streamed["settings"]
    progress = [json.loads(line) for line in StreamPaths.of(settings).progress.read_text().splitlines()]
    accepted = sum(p["valid"] - p["duplicates"] for p in progress)
    assert accepted == streamed["valid_events"]
    archive = pd.read_parquet(StreamPaths.of(settings).archive)
    assert len(archive) == streamed["valid_events"]
    assert archive["transaction_id"].is_unique
    assert sum(p["not_purchases"] for p in progress) == 5
    booked = archive[archive["transaction_id"].str.startswith("ledger-")].set_index("transaction_id")
    assert {t.transaction_id: (t.kind, t.amount) for t in streamed["others"]} == dict(
        zip(booked.index, zip(booked["kind"], booked["amount"], strict=True), strict=True))
    archive = archive[archive["kind"] == "purchase"]  # the activity the features count
    online = online_features(FeatureWriter.open(settings).store, list(streamed["population"].customer_ids[:50]),
                             [int(pd.Timestamp("2026-03-02", tz="UTC").timestamp())] * 50)
    expected = archive.assign(day=pd.to_datetime(archive["event_time"], utc=True))
    window = expected[(expected["day"] >= "2026-02-24") & (expected["day"] < "2026-03-03")]
    counts = window.groupby("customer_id").size()
    for cid, value in zip(online["customer_id"], online["tx_count_7d"], strict=True):
        assert value == counts.get(cid, 0), cid
    # lifetime spend is every purchase's amount; the refunds and the reversal count in the refund share of
    # the customers who had bought before them (the others have no state yet: counted, not kept)
    bought_before = set(pa_concat(streamed["tables"][:45])["customer_id"].to_pylist())
    refunded = {t.customer_id for t in streamed["others"] if t.kind != "purchase"}
    assert refunded & bought_before  # some refunds land in a state
    ledger = sorted(refunded | {streamed["others"][-1].customer_id})  # and the zero-amount purchase's customer
    online = online_features(FeatureWriter.open(settings).store, ledger,
                             [int(pd.Timestamp("2026-03-02", tz="UTC").timestamp())] * len(ledger))
    for cid, spend, share in zip(online["customer_id"], online["lifetime_spend"], online["refund_share"], strict=True):
        purchases = archive[archive["customer_id"] == cid]
        refunds = int(cid in refunded and cid in bought_before)
        assert spend == pytest.approx(purchases["amount"].sum(), rel=1e-9), cid
        assert share == pytest.approx(refunds / (refunds + len(purchases))), cid
    unmatched = sum(p.get("refunds_without_purchase", 0) for p in progress)
    assert unmatched == len(refunded - bought_before)


def test_online_features_equal_point_in_time_historical_features(streamed: dict) -> None:
    settings: Settings = streamed["settings"]
    store = FeatureWriter.open(settings).store
    rng = np.random.default_rng(3)
    last_event = pd.Timestamp("2026-03-02", tz="UTC")  # the simulated period ends on 2026-03-01
    customers = list(rng.choice(streamed["population"].customer_ids, 470, replace=False))
    customers += [f"never-seen-{i}" for i in range(30)]
    # as_of at or after every stored state: from right after the stream up to 60 days of silence
    offsets = rng.uniform(0, 60 * 86_400, len(customers))
    as_of = [int(last_event.timestamp() + offset) for offset in offsets]
    online = online_features(store, customers, as_of)
    entities = pd.DataFrame({"customer_id": customers, "event_timestamp": pd.to_datetime(as_of, unit="s", utc=True)})
    historical = historical_features(store, entities)
    assert len(historical) == len(entities)
    merged = online.assign(as_of_s=as_of).merge(historical, on=["customer_id", "as_of_s"], suffixes=("_on", "_off"))
    assert len(merged) == len(customers) >= 500
    silent = merged["days_since_last_tx_on"] > 14
    assert silent.sum() > 100 and (merged.loc[silent, "tx_count_7d_on"] == 0).all()
    assert_features_equal(merged)
    cold = merged["customer_id"].str.startswith("never-seen")
    assert (merged.loc[cold, "tx_count_90d_on"] == 0).all()
    assert (merged.loc[~cold, "tx_count_90d_on"] > 0).any()


def test_backfill_from_the_archive_rebuilds_the_same_online_state(streamed: dict, tmp_path: Path) -> None:
    from streaming.backfill import rebuild_history

    settings: Settings = streamed["settings"]
    store = FeatureWriter.open(settings).store
    customers = list(streamed["population"].customer_ids[:200])
    as_of = [int(pd.Timestamp("2026-03-10", tz="UTC").timestamp())] * len(customers)
    before = online_features(store, customers, as_of)

    from infra.spark import spark_session
    from streaming.backfill import archived_events

    rebuilt_settings = settings.model_copy(update={"data_dir": tmp_path / "rebuilt"})
    writer = FeatureWriter.open(rebuilt_settings)
    summary = rebuild_history(archived_events(spark_session(settings, "backfill-test"), settings), writer)
    assert summary.events == streamed["purchases"]
    after = online_features(writer.store, customers, as_of)
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(before[name], after[name], rtol=1e-9, err_msg=name)


def test_training_set_features_use_nothing_after_as_of(streamed: dict) -> None:
    from model_contract.labels import LabelPolicy
    from training.dataset import labelled_entities, training_set

    settings: Settings = streamed["settings"]
    archive = pd.read_parquet(StreamPaths.of(settings).archive, columns=["customer_id", "event_time", "kind"])
    archive = archive[archive["kind"] == "purchase"].drop(columns="kind")
    archive["event_time"] = pd.to_datetime(archive["event_time"], utc=True)
    archive["day"] = (archive["event_time"].astype("int64") // 10**9 // 86_400).astype("int64")
    daily = archive.groupby(["customer_id", "day"]).size().rename("count").reset_index()
    from streaming.archive import daily_counts  # the labels' reading of the archive: purchases only
    assert daily_counts(settings).equals(daily.sort_values(["customer_id", "day"], ignore_index=True))
    entities = labelled_entities(daily, LabelPolicy(horizon_days=14), grid_days=7)
    assert set(entities["label"]) == {"decline", "stable", "growth"}
    sample = entities.sample(300, random_state=4).reset_index(drop=True)
    frame = training_set(FeatureWriter.open(settings).store, sample)
    assert len(frame) == len(sample) and list(frame["label"]) == list(sample["label"])
    events = archive.groupby("customer_id")
    for row in frame.itertuples(index=False):
        own = events.get_group(row.customer_id)
        as_of_day = int(row.event_timestamp.timestamp()) // 86_400
        known = own[own["event_time"] <= row.event_timestamp]
        assert row.tx_count_30d == (known["day"] > as_of_day - 30).sum(), row.customer_id
        assert row.tx_count_7d == (known["day"] > as_of_day - 7).sum(), row.customer_id


def test_metrics_endpoint_reports_the_stream(streamed: dict) -> None:
    import urllib.request

    port = streamed["settings"].streaming.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("activity_stream_") and " " in line}
    assert values["activity_stream_dlq_events_total"] >= len(streamed["corpus"]) + len(streamed["duplicates"])
    assert values["activity_stream_duplicate_events_total"] >= len(streamed["duplicates"])
    assert values["activity_stream_input_rows_total"] >= streamed["valid_events"]
    for name in ("activity_stream_batch_duration_seconds_count", "activity_stream_consumer_lag_messages",
                 "activity_stream_freshness_seconds_count", "activity_stream_late_events_total",
                 "activity_stream_input_rows_per_second"):
        assert name in values, name


def test_late_events_are_counted_kept_and_reconciled(streamed: dict) -> None:
    from streaming.backfill import run_backfill

    settings: Settings = streamed["settings"]
    store = FeatureWriter.open(settings).store
    customer = streamed["population"].customer_ids[7]
    as_of = int(pd.Timestamp("2026-03-02", tz="UTC").timestamp())
    before = online_features(store, [customer], [as_of]).iloc[0]
    # 20 days behind the newest event (beyond the 48 h watermark, inside the 90-day history) ...
    late = example_like(customer, "late-1", "2026-02-09T12:00:00Z")
    # ... and 120 days behind: older than the customer's history, so only a rebuild can place it
    too_late = example_like(customer, "late-2", "2025-11-01T12:00:00Z")
    send_raw(settings, [(customer.encode(), late), (customer.encode(), too_late)])
    run_stream(settings, until_idle_s=2.0)
    progress = [json.loads(line) for line in StreamPaths.of(settings).progress.read_text().splitlines()]
    assert progress[-1]["late"] == 2 and progress[-1]["too_late"] == 1
    after = online_features(store, [customer], [as_of]).iloc[0]
    assert after["tx_count_30d"] == before["tx_count_30d"] + 1  # the late event counts in its day
    assert after["tenure_days"] == (pd.Timestamp("2026-03-02") - pd.Timestamp("2025-11-01")).days  # lifetime facts

    # The stream could not write a state as of November; the reconcile rebuild does.
    november = pd.DataFrame({"customer_id": [customer], "event_timestamp": [pd.Timestamp("2025-11-03", tz="UTC")]})
    assert historical_features(store, november).iloc[0]["tx_count_7d"] == 0
    summary = run_backfill(settings, reconcile=True)
    assert summary.customers == 1
    assert historical_features(store, november).iloc[0]["tx_count_7d"] == 1
    rebuilt = online_features(store, [customer], [as_of]).iloc[0]
    for name in FEATURE_NAMES:
        assert rebuilt[name] == pytest.approx(after[name], rel=1e-9), name


def example_like(customer: str, transaction_id: str, event_time: str) -> bytes:
    from streaming.schema import example_event

    document = example_event() | {"customer_id": customer, "transaction_id": transaction_id, "event_time": event_time}
    return json.dumps(document).encode()
