"""The cluster profile for real: every store and engine a separate server, as ``infra/profiles/cluster.yaml`` says.

Throwaway servers on free loopback ports (``infra/services.py``, ``infra/secure_kafka.py``): Kafka with a
SASL_SSL listener (SCRAM-SHA-512, a private CA), Redis (Feast's online store), PostgreSQL (MLflow's tracking
and registry) and a Spark standalone master with one worker. Feast's offline store is its Spark offline store.
Then what ``test_serving.py`` checks on the embedded profile: simulate -> stream (``activity stream run``, a
Spark application on the master, reading Kafka over SASL_SSL, writing Redis) -> train (``activity train run``:
training data through the Spark offline store, both members fitted by Spark on the master, runs and aliases in
PostgreSQL) -> serve -> query. The stream and the trainer run as their own processes, as they are deployed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from activity_settings import Settings, load_settings
from features.transform import FEATURE_NAMES
from tests.conftest import free_port, settings_env, stack_settings
from tests.integration.conftest import isolated, training_settings
from tests.parity import assert_champion_answer, assert_features_equal

pytestmark = pytest.mark.integration
PROFILE = Path(__file__).resolve().parents[2] / "infra" / "profiles" / "cluster.yaml"
CUSTOMERS, DAYS = 1_500, 200  # 2026-01-01 .. 2026-07-19
AFTER_S = int(pd.Timestamp("2026-07-21", tz="UTC").timestamp())  # after every simulated event
USER, PASSWORD = "activity", "cluster-profile-secret"


def test_the_cluster_profile_loads_and_the_environment_overrides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("ACTIVITY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ACTIVITY_CONFIG", str(PROFILE))
    settings = load_settings()
    assert settings.feature_store.online_store == "redis" and settings.feature_store.redis_connection_string
    assert settings.feature_store.offline_store == "spark"
    assert settings.mlflow.tracking_uri.startswith("postgresql://") and settings.mlflow.artifact_location
    assert settings.training.backend == "spark" and settings.spark.master.startswith("spark://")
    assert not settings.kafka.embedded
    monkeypatch.setenv("ACTIVITY_MLFLOW__TRACKING_URI", "postgresql://mlflow:secret@db:5432/mlflow")
    assert load_settings().mlflow.tracking_uri == "postgresql://mlflow:secret@db:5432/mlflow"


def test_a_database_tracking_store_keeps_artifacts_under_the_data_dir(tmp_path: Path) -> None:
    from model_contract.registry import artifact_location

    def location(uri: str | None) -> str | None:
        return artifact_location(load_settings(data_dir=tmp_path, mlflow={"tracking_uri": uri}))

    beside = (tmp_path / "mlflow" / "artifacts").as_uri()
    assert location(None) == location("postgresql://u@db/mlflow") == location("mysql+pymysql://u@db/m") == beside
    assert location("http://mlflow:5000") is None  # a tracking server keeps its own artifact root


@dataclass(frozen=True)
class Cluster:
    settings: Settings
    customers: list[str]
    version: str  # the champion the training run registered
    redis_port: int
    spark: Any  # infra.services.SparkStandalone


def activity(settings: Settings, *arguments: str, timeout_s: float = 900.0) -> str:
    """``activity <arguments>`` in its own process on exactly ``settings``; its output (it must succeed)."""
    done = subprocess.run([sys.executable, "-m", "activity", *arguments], env=settings_env(settings) | {
        "COLUMNS": "200"}, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"activity {' '.join(arguments)} failed ({done.returncode}):\n{done.stdout[-3000:]}" \
                                 f"\n{done.stderr[-5000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The servers; 1,500 simulated customers x 200 days published over SASL_SSL and streamed into Feast by the
    stream on the Spark master; one training run on the master, tracked and registered in PostgreSQL."""
    from infra.secure_kafka import secured_broker
    from infra.services import postgres_server, redis_server, spark_standalone
    from model_contract import registry
    from streaming.publish import encode_simulated, publish_tables
    from streaming.simulator import make_population, simulate

    root = tmp_path_factory.mktemp("cluster")
    # not under tmp_path: as root, PostgreSQL runs as the postgres user, who cannot enter pytest's 0700 base
    pg_dir = Path(tempfile.mkdtemp(prefix="activity-cluster-pg-"))
    try:
        with ExitStack() as servers:
            redis = servers.enter_context(redis_server(root / "redis", free_port()))
            postgres = servers.enter_context(postgres_server(pg_dir, free_port()))
            # 4 cores on 2: the stream, the trainer and this process's offline-store session may overlap
            spark = servers.enter_context(spark_standalone(root / "spark", free_port(), cores=4, memory="6g"))
            broker = servers.enter_context(secured_broker(root / "kafka", free_port(), free_port(), USER, PASSWORD))
            base = stack_settings(root / "data")
            base = isolated(base.model_copy(update={"kafka": broker.kafka_settings(base.kafka)}), root / "data")
            settings = training_settings(base.model_copy(update={
                "feature_store": base.feature_store.model_copy(update={
                    "online_store": "redis", "redis_connection_string": redis.connection_string,
                    "offline_store": "spark"}),
                "mlflow": base.mlflow.model_copy(update={
                    "tracking_uri": postgres.url("mlflow"), "artifact_location": (root / "artifacts").as_uri()}),
                "spark": base.spark.model_copy(update={
                    "master": spark.master_url, "executor_memory": "2g", "cores_max": 2}),
                "training": base.training.model_copy(update={"backend": "spark"}),
            }))
            population = make_population(CUSTOMERS, date(2026, 1, 1), DAYS, seed=13)
            assert publish_tables(settings.kafka, simulate(population), encode_simulated).failed == 0
            activity(settings, "stream", "run", "--until-idle", "2")
            activity(settings, "train", "run")
            champion = registry.load_by_alias(settings, "champion", root / "champion")
            assert champion is not None, "the training run registered no champion"
            try:
                yield Cluster(settings, [str(c) for c in population.customer_ids], str(champion.version),
                              redis.port, spark)
            finally:
                stop_session_on(spark.master_url)
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)


def stop_session_on(master: str) -> None:
    """Stop this process's Spark session if it runs on ``master`` (the Spark offline store started it here): the
    master goes away with the module, and a later ``getOrCreate`` in this process would get that session back
    and wait for executors forever."""
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession() or SparkSession._instantiatedSession
    if session is not None and session.sparkContext.master == master:
        session.stop()


def stored_event_time(cluster: Cluster, customer: str) -> pd.Timestamp | None:
    from serving.online import OnlineFeatures

    with OnlineFeatures(cluster.settings) as online:
        (_, moment), = online.states([customer], timeout_s=10.0)
    return None if moment is None else pd.Timestamp(moment)


def active(cluster: Cluster, n: int) -> list[str]:
    """``n`` customers whose stored state's newest event is in the last week of the history (after 2026-07-12)."""
    from serving.online import OnlineFeatures

    with OnlineFeatures(cluster.settings) as online:
        stored = online.states(cluster.customers[:200], timeout_s=10.0)
    recent = [customer for customer, (_, moment) in zip(cluster.customers, stored, strict=False)
              if moment is not None and moment >= pd.Timestamp("2026-07-12", tz="UTC")]
    assert len(recent) >= n
    return recent[:n]


@pytest.fixture(scope="module")
def scorer(cluster: Cluster):  # (TestClient, headers)
    from fastapi.testclient import TestClient

    from serving.auth import issue_token
    from serving.main import build_app

    settings = cluster.settings.model_copy(update={"serving": cluster.settings.serving.model_copy(
        update={"reload_interval_s": 3600.0, "online_timeout_ms": 500.0})})
    headers = {"Authorization": f"Bearer {issue_token(settings, 'analyst', ['scores:read', 'model:read'])}"}
    with TestClient(build_app(settings), raise_server_exceptions=False) as client:
        yield client, headers


def test_the_stores_are_redis_postgresql_and_spark(cluster: Cluster) -> None:
    import mlflow
    import redis
    from sqlalchemy import create_engine, text

    from features.store import SPARK_STORE_TYPE, FeatureWriter
    from model_contract import registry

    store = FeatureWriter.open(cluster.settings).store
    assert store.config.online_store.type == "redis"
    assert store.config.offline_store.type == SPARK_STORE_TYPE  # the platform's Spark store (as-of join)
    assert redis.Redis(host="127.0.0.1", port=cluster.redis_port).dbsize() >= 0.9 * CUSTOMERS  # a hash a customer
    assert not (cluster.settings.home / "feature_store" / "data" / "online_store.db").exists()
    assert registry.tracking_uri(cluster.settings).startswith("postgresql://")
    assert not (cluster.settings.home / "mlflow" / "mlflow.db").exists()
    engine = create_engine(cluster.settings.mlflow.tracking_uri)
    try:
        with engine.connect() as connection:
            aliases = connection.execute(text("SELECT alias, version FROM registered_model_aliases")).all()
    finally:
        engine.dispose()
    assert ("champion", int(cluster.version)) in [(alias, int(version)) for alias, version in aliases]
    client = mlflow.MlflowClient(registry.tracking_uri(cluster.settings))
    version = client.get_model_version(cluster.settings.mlflow.registered_model, cluster.version)
    assert client.get_run(version.run_id).data.params["backend"] == "spark"
    # the stream and the trainer were applications of the standalone master (not a local[*] in their process);
    # the trainer's is the session its training-data retrieval started, which the Spark backend then reuses
    assert {"activity-stream", "activity-features"} <= set(cluster.spark.applications())


def test_redis_online_features_equal_feasts_and_the_point_in_time_offline_features(cluster: Cluster) -> None:
    from features.store import FeatureWriter, historical_features, online_features, online_states
    from serving.online import OnlineFeatures

    store = FeatureWriter.open(cluster.settings).store
    rng = np.random.default_rng(5)
    customers = [str(c) for c in rng.choice(cluster.customers, 280, replace=False)] + [f"never-{i}" for i in range(20)]
    as_of = [AFTER_S + int(offset) for offset in rng.uniform(0, 60 * 86_400, len(customers))]
    with OnlineFeatures(cluster.settings) as online:
        assert online.backend == "redis"
        matrix, event_times, known = online.features(customers, as_of, timeout_s=10.0)
        states = [value for value, _ in online.states(customers, timeout_s=10.0)]
    assert states == online_states(store, customers)
    feast = online_features(store, customers, as_of)
    np.testing.assert_array_equal(matrix, feast[list(FEATURE_NAMES)].to_numpy(dtype=np.float32))
    never = np.array([state is None for state in states])  # never-* and simulated customers without an event
    assert never[-20:].all() and not never[:-20].all() and never[:-20].sum() < 10
    np.testing.assert_array_equal(known, ~never)
    assert all((t is None) == n for t, n in zip(event_times, never, strict=True))
    entities = pd.DataFrame({"customer_id": customers, "event_timestamp": pd.to_datetime(as_of, unit="s", utc=True)})
    offline = historical_features(store, entities)
    merged = feast.assign(as_of_s=as_of).merge(offline, on=["customer_id", "as_of_s"], suffixes=("_on", "_off"))
    assert len(merged) == len(customers)
    assert_features_equal(merged)
    assert (merged.loc[~never, "tx_count_90d_on"] > 0).any()


def test_a_query_returns_the_champions_prediction_from_the_offline_features(cluster: Cluster, scorer) -> None:
    from features.store import FeatureWriter, historical_features
    from model_contract import registry
    from model_contract.onnx_runner import as_matrix
    from training.tracking import load_ensemble

    client, headers = scorer
    customers = active(cluster, 3)
    entities = pd.DataFrame({"customer_id": customers, "event_timestamp": pd.to_datetime([AFTER_S] * 3, unit="s",
                                                                                          utc=True)})
    offline = historical_features(FeatureWriter.open(cluster.settings).store, entities).set_index("customer_id")
    champion = registry.load_by_alias(cluster.settings, "champion", cluster.settings.home / "test-champion")
    assert champion is not None and str(champion.version) == cluster.version
    expected = load_ensemble(champion).predict_proba(as_matrix(offline.loc[customers]))
    as_of = pd.Timestamp(AFTER_S, unit="s", tz="UTC").isoformat()
    for i, customer in enumerate(customers):
        answer = client.get(f"/v1/customers/{customer}/activity", params={"as_of": as_of}, headers=headers)
        assert_champion_answer(answer, champion.version, expected[i])
    model = client.get("/v1/model", headers=headers).json()
    assert model["source"] == "registry" and model["version"] == champion.version
    assert client.get("/readyz").status_code == 200


def test_a_late_event_rewrites_the_redis_state_with_the_same_event_time(cluster: Cluster) -> None:
    """The state of a customer whose newest event is unchanged still changes: Feast's redis store must take it."""
    from confluent_kafka import Producer

    from features.store import FeatureWriter, historical_features, online_features
    from streaming.schema import example_event

    settings = cluster.settings
    store = FeatureWriter.open(settings).store
    customer = active(cluster, 4)[-1]
    newest = stored_event_time(cluster, customer)
    before = online_features(store, [customer], [AFTER_S]).iloc[0]
    event = example_event() | {"customer_id": customer, "transaction_id": "cluster-late-1",
                               "event_time": "2026-07-01T12:00:00Z"}  # 18 days behind the newest events
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    producer.produce(settings.kafka.topics.transactions, json.dumps(event).encode(), customer.encode())
    assert producer.flush(30) == 0
    activity(settings, "stream", "run", "--until-idle", "2")  # the stream resumes from its checkpoint
    assert stored_event_time(cluster, customer) == newest  # the same event time: a dedup by time would drop it
    after = online_features(store, [customer], [AFTER_S]).iloc[0]
    assert after["tx_count_30d"] == before["tx_count_30d"] + 1
    entities = pd.DataFrame({"customer_id": [customer], "event_timestamp": [pd.Timestamp(AFTER_S, unit="s", tz="UTC")]})
    offline = historical_features(store, entities).iloc[0]
    for name in FEATURE_NAMES:
        assert after[name] == pytest.approx(offline[name], rel=1e-9), name
