"""The cluster profile's stores for real: Feast's online store in Redis, MLflow's tracking and registry in PostgreSQL.

Throwaway ``redis-server`` and PostgreSQL clusters (``infra/services.py``, Debian packages ``redis-server`` and
``postgresql``) on free ports; then what ``test_serving.py`` checks on the default stores: simulate -> stream
(Kafka -> Spark -> Feast, online into Redis) -> train (runs, model and aliases in PostgreSQL) -> serve -> query.
Kafka and Spark stay the session's local ones: the Spark offline store and a standalone master are not here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from activity_settings import Settings, load_settings
from features.transform import FEATURE_NAMES
from tests.conftest import free_port
from tests.integration.conftest import isolated, training_settings
from tests.parity import assert_champion_answer, assert_features_equal

pytestmark = pytest.mark.integration
PROFILE = Path(__file__).resolve().parents[2] / "infra" / "profiles" / "cluster.yaml"
CUSTOMERS, DAYS = 1_500, 200  # 2026-01-01 .. 2026-07-19
AFTER_S = int(pd.Timestamp("2026-07-21", tz="UTC").timestamp())  # after every simulated event


def test_the_cluster_profile_loads_and_the_environment_overrides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("ACTIVITY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ACTIVITY_CONFIG", str(PROFILE))
    settings = load_settings()
    assert settings.feature_store.online_store == "redis" and settings.feature_store.redis_connection_string
    assert settings.mlflow.tracking_uri.startswith("postgresql://") and settings.mlflow.artifact_location
    assert settings.training.backend == "spark" and settings.spark.master.startswith("spark://")
    assert not settings.kafka.embedded
    monkeypatch.setenv("ACTIVITY_MLFLOW__TRACKING_URI", "postgresql://mlflow:secret@db:5432/mlflow")
    assert load_settings().mlflow.tracking_uri == "postgresql://mlflow:secret@db:5432/mlflow"


def test_a_database_tracking_store_keeps_artifacts_under_the_data_dir(tmp_path: Path) -> None:
    from training.tracking import artifact_location

    def location(uri: str | None) -> str | None:
        return artifact_location(load_settings(data_dir=tmp_path, mlflow={"tracking_uri": uri}))

    beside = (tmp_path / "mlflow" / "artifacts").as_uri()
    assert location(None) == location("postgresql://u@db/mlflow") == location("mysql+pymysql://u@db/m") == beside
    assert location("http://mlflow:5000") is None  # a tracking server keeps its own artifact root


@dataclass(frozen=True)
class Cluster:
    settings: Settings
    customers: list[str]
    outcome: object  # training.pipeline.TrainingOutcome
    redis_port: int


@pytest.fixture(scope="module")
def cluster(kafka_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Redis + PostgreSQL, 1,500 simulated customers x 200 days streamed into Feast (online: Redis), one training
    run tracked and registered in PostgreSQL."""
    from infra.services import ServiceError, postgres_bin_dir, postgres_server, redis_binary, redis_server
    from streaming.publish import encode_simulated, publish_tables
    from streaming.runner import run_stream
    from streaming.simulator import make_population, simulate
    from training.pipeline import build_training_data, train

    try:
        redis_binary()
        postgres_bin_dir()
    except ServiceError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("cluster")
    # not under tmp_path: as root, PostgreSQL runs as the postgres user, who cannot enter pytest's 0700 base
    pg_dir = Path(tempfile.mkdtemp(prefix="activity-cluster-pg-"))
    try:
        with redis_server(root / "redis", free_port()) as redis, postgres_server(pg_dir, free_port()) as postgres:
            base = isolated(kafka_stack, root / "data")
            settings = training_settings(base.model_copy(update={
                "feature_store": base.feature_store.model_copy(update={
                    "online_store": "redis", "redis_connection_string": redis.connection_string}),
                "mlflow": base.mlflow.model_copy(update={
                    "tracking_uri": postgres.url("mlflow"), "artifact_location": (root / "artifacts").as_uri()}),
            }))
            population = make_population(CUSTOMERS, date(2026, 1, 1), DAYS, seed=13)
            assert publish_tables(settings.kafka, simulate(population), encode_simulated).failed == 0
            run_stream(settings, until_idle_s=2.0)
            outcome = train(settings, data=build_training_data(settings))
            yield Cluster(settings, [str(c) for c in population.customer_ids], outcome, redis.port)
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)


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
def scorer(cluster: Cluster):  # noqa: ANN201 - (TestClient, headers)
    from fastapi.testclient import TestClient

    from serving.auth import issue_token
    from serving.main import build_app

    settings = cluster.settings.model_copy(update={"serving": cluster.settings.serving.model_copy(
        update={"reload_interval_s": 3600.0, "online_timeout_ms": 500.0})})
    headers = {"Authorization": f"Bearer {issue_token(settings, 'analyst', ['scores:read', 'model:read'])}"}
    with TestClient(build_app(settings), raise_server_exceptions=False) as client:
        yield client, headers


def test_the_stores_are_redis_and_postgresql(cluster: Cluster) -> None:
    import redis
    from sqlalchemy import create_engine, text

    from features.store import FeatureWriter
    from training import tracking

    store = FeatureWriter.open(cluster.settings).store
    assert store.config.online_store.type == "redis"
    assert redis.Redis(host="127.0.0.1", port=cluster.redis_port).dbsize() >= 0.9 * CUSTOMERS  # a hash a customer
    assert not (cluster.settings.home / "feature_store" / "data" / "online_store.db").exists()
    assert tracking.tracking_uri(cluster.settings).startswith("postgresql://")
    assert not (cluster.settings.home / "mlflow" / "mlflow.db").exists()
    engine = create_engine(cluster.settings.mlflow.tracking_uri)
    try:
        with engine.connect() as connection:
            aliases = connection.execute(text("SELECT alias, version FROM registered_model_aliases")).all()
    finally:
        engine.dispose()
    assert cluster.outcome.decision.promote, cluster.outcome.decision.reasons
    assert ("champion", int(cluster.outcome.version)) in [(alias, int(version)) for alias, version in aliases]


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


def test_a_query_returns_the_champions_prediction_from_the_offline_features(cluster: Cluster, scorer) -> None:  # noqa: ANN001
    from features.store import FeatureWriter, historical_features
    from training import tracking
    from training.model import as_matrix

    client, headers = scorer
    customers = active(cluster, 3)
    entities = pd.DataFrame({"customer_id": customers, "event_timestamp": pd.to_datetime([AFTER_S] * 3, unit="s",
                                                                                          utc=True)})
    offline = historical_features(FeatureWriter.open(cluster.settings).store, entities).set_index("customer_id")
    champion = tracking.load_by_alias(cluster.settings, "champion", cluster.settings.home / "test-champion")
    assert champion is not None and champion.version == cluster.outcome.version
    expected = champion.ensemble().predict_proba(as_matrix(offline.loc[customers]))
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
    from streaming.runner import run_stream
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
    run_stream(settings, until_idle_s=2.0)
    assert stored_event_time(cluster, customer) == newest  # the same event time: a dedup by time would drop it
    after = online_features(store, [customer], [AFTER_S]).iloc[0]
    assert after["tx_count_30d"] == before["tx_count_30d"] + 1
    entities = pd.DataFrame({"customer_id": [customer], "event_timestamp": [pd.Timestamp(AFTER_S, unit="s", tz="UTC")]})
    offline = historical_features(store, entities).iloc[0]
    for name in FEATURE_NAMES:
        assert after[name] == pytest.approx(offline[name], rel=1e-9), name
