"""Feast's Spark offline store against the file store: the same point-in-time features, the same training set.

A simulated history folded by the backfill's code (``rebuild_history``) is written through ``FeatureWriter``
into one data directory, plus rows that make ties: a later rewrite of some states (newer write time, other
bytes: it must win), an earlier one (it must lose) and exact copies (same times, same bytes). The repo is
opened with ``feature_store.offline_store: file``, switched to ``spark`` and back; every answer is also
checked against a pandas oracle (the newest state at or before each row's time, by event then write time).
No Kafka: only a local Spark session.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from activity_settings import Settings, load_settings
from features.state import CREATED_TIMESTAMP, ENTITY_KEY, EVENT_TIMESTAMP, STATE_FEATURE
from features.store import SPARK_APP, FeatureWriter, historical_features, open_feature_store
from features.transform import AS_OF, FEATURE_NAMES, features_frame
from tests.integration.conftest import training_settings
from tests.parity import assert_features_equal

pytestmark = pytest.mark.integration
CUSTOMERS, DAYS, START = 400, 150, date(2026, 1, 1)  # 2026-01-01 .. 2026-05-30
REWRITTEN = 40  # customers with a state rewritten at the same event time


def offline_store(settings: Settings, kind: str) -> Settings:
    return settings.model_copy(update={"feature_store": settings.feature_store.model_copy(
        update={"offline_store": kind})})


@dataclass(frozen=True)
class History:
    settings: Settings  # offline_store: file
    daily: pd.DataFrame  # customer_id, day, count of the simulated events
    offline: pd.DataFrame  # every offline row written
    rewrites: pd.DataFrame  # the rows that must win their tie
    entities: pd.DataFrame  # customer_id, event_timestamp (with one duplicated row per ten)
    owned_spark: bool  # the session was this module's: stopped before the retrievals


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    from pyspark.sql import SparkSession

    from infra.spark import spark_session
    from streaming.backfill import EVENT_COLUMNS, rebuild_history
    from streaming.schema import PURCHASE
    from streaming.simulator import make_population, simulate

    settings = training_settings(load_settings(
        data_dir=tmp_path_factory.mktemp("spark-offline"),
        spark={"master": "local[2]", "driver_memory": "2g", "shuffle_partitions": 4}))
    owned = SparkSession.getActiveSession() is None
    spark = spark_session(settings, "activity-tests-offline-store")
    population = make_population(CUSTOMERS, START, DAYS, seed=21)
    events = pa.concat_tables(simulate(population))
    events = events.append_column("kind", pa.array([PURCHASE] * events.num_rows))  # simulated events are purchases
    writer = FeatureWriter.open(settings)
    rebuild_history(spark.createDataFrame(events.select(list(EVENT_COLUMNS)).to_pandas()), writer)
    if owned:  # the spark store's retrievals must start the platform's session themselves
        spark.stop()
    offline = pd.read_parquet(writer.offline_dir)
    rewrites = write_ties(writer, offline, np.random.default_rng(4))
    offline = pd.read_parquet(writer.offline_dir)
    daily = (pd.DataFrame({ENTITY_KEY: events["customer_id"].to_numpy(zero_copy_only=False),
                           "day": events["event_time"].cast(pa.int64()).to_numpy() // 86_400_000})
             .groupby([ENTITY_KEY, "day"]).size().rename("count").reset_index())
    entities = entity_rows(offline, rewrites, [str(c) for c in population.customer_ids], np.random.default_rng(5))
    yield History(settings, daily, offline, rewrites, entities, owned)


def write_ties(writer: FeatureWriter, offline: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Rewrites of one state of ``REWRITTEN`` customers at its own event time with another of their states' bytes:
    one written an hour later (wins), one an hour earlier (loses); and exact copies of other rows."""
    states = offline[offline[EVENT_TIMESTAMP] > pd.Timestamp("2000-01-01", tz="UTC")]  # not the 1970 genesis rows
    counts = states.groupby(ENTITY_KEY).size()
    chosen = rng.choice(counts.index[counts >= 3], REWRITTEN, replace=False)
    rows, losers = [], []
    for customer in chosen:
        own = states[states[ENTITY_KEY] == customer].sort_values(EVENT_TIMESTAMP)
        target, newer, older = own.iloc[1], own.iloc[-1], own.iloc[0]  # other bytes than the target's
        rows.append(target.to_dict() | {CREATED_TIMESTAMP: target[CREATED_TIMESTAMP] + pd.Timedelta(hours=1),
                                        STATE_FEATURE: newer[STATE_FEATURE]})
        losers.append(target.to_dict() | {CREATED_TIMESTAMP: target[CREATED_TIMESTAMP] - pd.Timedelta(hours=1),
                                          STATE_FEATURE: older[STATE_FEATURE]})
    rewrites = pd.DataFrame(rows)
    writer.write_offline(rewrites, "reconcile-later")
    writer.write_offline(pd.DataFrame(losers), "reconcile-earlier")
    copies = offline.sample(300, random_state=1)  # genesis rows among them: the stream and a backfill both write them
    writer.write_offline(copies, "stream-copy")
    return rewrites


def entity_rows(offline: pd.DataFrame, rewrites: pd.DataFrame, customers: list[str],
                rng: np.random.Generator) -> pd.DataFrame:
    """Random times around the history, exact state times and a microsecond before them, the tied times,
    never-seen customers, times before 1970 (before every state, the genesis rows included), duplicates."""
    start, end = pd.Timestamp(START, tz="UTC"), pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS + 30)
    spread = rng.integers(start.value - 10 * 86_400 * 10**9, end.value, 200)
    states = offline[offline[EVENT_TIMESTAMP] > pd.Timestamp("2000-01-01", tz="UTC")].sample(40, random_state=2)
    tied = rewrites[EVENT_TIMESTAMP]
    parts = [
        (rng.choice(customers, 200), spread),
        (states[ENTITY_KEY], states[EVENT_TIMESTAMP]),
        (states[ENTITY_KEY], states[EVENT_TIMESTAMP] - pd.Timedelta(microseconds=1)),
        (rewrites[ENTITY_KEY], tied),
        (rewrites[ENTITY_KEY], tied + pd.Timedelta(seconds=1)),
        ([f"never-{i}" for i in range(20)], rng.integers(start.value, end.value, 20)),
        (rng.choice(customers, 10, replace=False), ["1969-06-01"] * 10),
    ]
    frame = pd.concat([pd.DataFrame({ENTITY_KEY: np.asarray(ids, dtype=object),
                                     EVENT_TIMESTAMP: pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("ns")})
                       for ids, times in parts], ignore_index=True)
    frame = pd.concat([frame, frame.iloc[::10]], ignore_index=True)  # Feast merges duplicate rows: so do we
    return frame.sample(frac=1.0, random_state=3, ignore_index=True)


def oracle_states(offline: pd.DataFrame, rows: pd.DataFrame) -> list[bytes | None]:
    """The newest offline state at or before each row's time: by event time, then write time."""
    right = offline.assign(state_time=offline[EVENT_TIMESTAMP].dt.as_unit("ns"))
    right = right.sort_values(["state_time", CREATED_TIMESTAMP], kind="stable")[[ENTITY_KEY, "state_time",
                                                                                 STATE_FEATURE]]
    left = rows[[ENTITY_KEY, EVENT_TIMESTAMP]].assign(
        at=rows[EVENT_TIMESTAMP].dt.as_unit("ns"), row=np.arange(len(rows))).sort_values("at", kind="stable")
    merged = pd.merge_asof(left, right, left_on="at", right_on="state_time", by=ENTITY_KEY, direction="backward")
    merged = merged.sort_values("row")
    return [value if isinstance(value, bytes) else None for value in merged[STATE_FEATURE]]  # NaN, NA: none


def paired(on: pd.DataFrame, off: pd.DataFrame) -> pd.DataFrame:
    columns = list(FEATURE_NAMES)
    return pd.concat([on[columns].add_suffix("_on"), off[columns].add_suffix("_off")], axis=1)


@dataclass(frozen=True)
class Answers:
    file: pd.DataFrame
    spark: pd.DataFrame
    file_again: pd.DataFrame  # after switching back
    seconds: dict[str, float]
    session: dict[str, str]  # the active session's app name and configuration after the spark retrieval


@pytest.fixture(scope="module")
def answers(history: History) -> Answers:
    from pyspark.sql import SparkSession

    seconds: dict[str, float] = {}
    frames: dict[str, pd.DataFrame] = {}
    session_conf: dict[str, str] = {}
    for name, kind in (("file", "file"), ("spark", "spark"), ("file_again", "file")):
        store = open_feature_store(offline_store(history.settings, kind))
        started = time.perf_counter()
        frames[name] = historical_features(store, history.entities)
        seconds[name] = time.perf_counter() - started
        if name == "spark":
            started = time.perf_counter()
            historical_features(store, history.entities)
            seconds["spark_warm"] = time.perf_counter() - started
            session = SparkSession.getActiveSession()
            assert session is not None
            session_conf = {key: str(session.conf.get(key)) for key in (
                "spark.app.name", "spark.sql.session.timeZone", "spark.sql.parser.quotedRegexColumnNames",
                "spark.master")}
    print(f"\nhistorical retrieval of {len(history.entities)} entity rows: "
          + ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items()))
    return Answers(frames["file"], frames["spark"], frames["file_again"], seconds, session_conf)


def test_the_spark_store_answers_exactly_the_file_stores_frame(history: History, answers: Answers) -> None:
    rows = history.entities.drop_duplicates(ignore_index=True)
    assert len(history.entities) >= 300 + len(rows) // 10 and len(answers.spark) == len(rows)
    keys = [ENTITY_KEY, EVENT_TIMESTAMP, AS_OF]
    pd.testing.assert_frame_equal(answers.spark[keys], rows.assign(**{AS_OF: answers.file[AS_OF]}))  # entity order
    for frame in (answers.spark, answers.file_again):
        assert list(frame.columns) == list(answers.file.columns) == [*keys, *FEATURE_NAMES]
        pd.testing.assert_frame_equal(frame[keys], answers.file[keys])  # values, dtypes (UTC), order
        assert (frame.dtypes[list(FEATURE_NAMES)] == np.float64).all()
        assert_features_equal(paired(answers.file, frame))


def test_both_answer_the_newest_state_at_or_before_each_row(history: History, answers: Answers) -> None:
    rows = history.entities.drop_duplicates(ignore_index=True)
    as_of = answers.spark[AS_OF].to_numpy()  # the rows' times in seconds (the first test checks them)
    states = oracle_states(history.offline, rows)
    expected = features_frame(states, as_of)
    assert_features_equal(paired(expected, answers.spark))
    assert_features_equal(paired(expected, answers.file))
    # what the rows exercised: ties won by the later write, rows before every state, never-seen customers
    later = set(history.rewrites[STATE_FEATURE])
    assert sum(state in later for state in states) >= 2 * REWRITTEN
    cold = rows[ENTITY_KEY].str.startswith("never-") | (rows[EVENT_TIMESTAMP] < pd.Timestamp(0, tz="UTC"))
    assert cold.sum() == 30 and all(states[i] is None for i in np.flatnonzero(cold))
    cold_start = features_frame([None] * int(cold.sum()), as_of[cold.to_numpy()])
    assert_features_equal(paired(cold_start, answers.spark[cold.to_numpy()].reset_index(drop=True)))


def test_the_spark_retrieval_runs_on_the_platforms_session(history: History, answers: Answers) -> None:
    session = answers.session
    assert session["spark.sql.session.timeZone"] == "UTC" and session["spark.master"] == "local[2]"
    assert session["spark.sql.parser.quotedRegexColumnNames"] == "false"  # Feast's switch, put back
    if history.owned_spark:  # no session was running: historical_features started infra.spark's
        assert session["spark.app.name"] == SPARK_APP


def test_build_training_data_gives_the_same_rows_under_both_stores(history: History) -> None:
    from training.pipeline import build_training_data

    data = {kind: build_training_data(offline_store(history.settings, kind), daily=history.daily)
            for kind in ("file", "spark")}
    file, spark = data["file"], data["spark"]
    assert len(file.frame) >= 1_500
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(file.split, name), getattr(spark.split, name))
    others = [column for column in file.frame.columns if column not in FEATURE_NAMES]
    pd.testing.assert_frame_equal(spark.frame[others], file.frame[others])
    assert_features_equal(paired(file.frame, spark.frame))
    print(f"\ntraining set of {len(file.frame)} rows: retrieval file {file.retrieval_s:.2f} s, "
          f"spark {spark.retrieval_s:.2f} s")


def test_the_yaml_names_the_spark_store_and_the_source_its_files(history: History) -> None:
    from features.repo import STATE_SOURCE
    from features.store import repo_dir

    settings = offline_store(history.settings, "spark")
    store = open_feature_store(settings)
    assert store.config.offline_store.type == "features.spark_offline_store.AsOfSparkOfflineStore"
    assert store.config.offline_store.spark_conf["spark.master"] == "local[2]"
    source = store.get_data_source(STATE_SOURCE)
    assert type(source).__name__ == "SparkSource" and source.file_format == "parquet"
    assert Path(source.path.removeprefix("file://")) == (repo_dir(settings) / "data" / "customer_activity_state")
