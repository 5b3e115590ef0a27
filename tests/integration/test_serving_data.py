"""The scorer's data paths on a real Feast store and a real MLflow registry, without Kafka or Spark.

Simulated events -> per-day partials (a pandas twin of ``streaming.aggregate``) -> ``ActivityHistory``
-> ``FeatureWriter`` (Feast's online SQLite table), then ``serving.online`` against Feast's own
online path; tiny ensembles fitted on random features, logged and registered the way training does,
then ``serving.scoring.ModelHolder`` loading, swapping, rejecting and falling back.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from activity_settings import Settings, load_settings
from features.transform import COLD_START, FEATURE_NAMES
from streaming.history import ActivityHistory
from streaming.simulator import make_population, simulate
from tests.partials import partials_of

pytestmark = pytest.mark.integration

DAY_S = 86_400
START = date(2026, 1, 1)
DAYS = 90
END_S = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp())  # the day after the last simulated day


@dataclass(frozen=True)
class FeatureData:
    settings: Settings
    store: object  # feast.FeatureStore
    customers: list[str]  # customers with a stored state
    history: ActivityHistory


@pytest.fixture(scope="module")
def feature_data(tmp_path_factory: pytest.TempPathFactory) -> FeatureData:
    """300 simulated customers over 90 days folded day by day (as ``rebuild_history`` does) and written online."""
    from features.store import FeatureWriter

    settings = load_settings(data_dir=tmp_path_factory.mktemp("serving-data"))
    population = make_population(300, START, DAYS, seed=3)
    partials = partials_of(pa.concat_tables(simulate(population)))
    history = ActivityHistory()
    for _, day_partials in partials.sort_values(["day", "customer_id"]).groupby("day", sort=True):
        history.merge(day_partials)
    writer = FeatureWriter.open(settings)
    writer.write_online(history.export(np.arange(history.size)))
    return FeatureData(settings, writer.store, list(history.customer_ids), history)


def request_rows(data: FeatureData, n: int = 50, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` customers, a tenth never seen, each at one of several request times (some before their last event)."""
    rng = np.random.default_rng(seed)
    known = [str(c) for c in rng.choice(data.customers, size=n - n // 10, replace=False)]
    customers = known + [f"never-seen-{i}" for i in range(n // 10)]
    rng.shuffle(customers)
    moments = [END_S, END_S + 3_600 * 13, END_S - 20 * DAY_S + 1_234, END_S + 45 * DAY_S, END_S + 400 * DAY_S]
    return customers, [int(rng.choice(moments)) for _ in customers]


def test_online_features_equal_feasts_own_online_path(feature_data: FeatureData) -> None:
    from features.store import online_features, online_states
    from serving.online import OnlineFeatures

    with OnlineFeatures(feature_data.settings) as online:
        assert online.backend == "sqlite"
        probe = sqlite3.connect(online.sqlite.db_path)
        assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        probe.close()
        for seed in range(3):
            customers, as_of = request_rows(feature_data, seed=seed)
            matrix, event_times, known = online.features(customers, as_of)
            expected = online_features(feature_data.store, customers, as_of)
            assert list(expected["customer_id"]) == customers
            assert matrix.dtype == np.float32 and matrix.shape == (50, len(FEATURE_NAMES))
            np.testing.assert_array_equal(matrix, expected[list(FEATURE_NAMES)].to_numpy(dtype=np.float32))
            never = np.array([c.startswith("never-seen") for c in customers])
            np.testing.assert_array_equal(known, ~never)
            cold = np.array([COLD_START[name] for name in FEATURE_NAMES], dtype=np.float32)
            assert (matrix[never] == cold).all()
            assert all((t is None) == n for t, n in zip(event_times, never, strict=True))
            stored = online.states(customers)
            assert [value for value, _ in stored] == online_states(feature_data.store, customers)
        index = int(np.flatnonzero(~never)[0])
        last = feature_data.history.last_event_s[feature_data.history.rows_of([customers[index]])][0]
        first_known = event_times[index]
        assert 0 <= last - first_known.timestamp() < 1 and first_known.tzinfo is not None  # Feast keeps whole seconds
        assert online.features([], []).matrix.shape == (0, len(FEATURE_NAMES))


def test_the_writers_sqlite_upsert_stores_what_feasts_own_write_does(feature_data: FeatureData,
                                                                     tmp_path: Path) -> None:
    """The stream's one-``executemany`` SQLite write and Feast's ``online_write_batch`` leave the same rows."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from features.repo import STATE_VIEW
    from features.state import ENTITY_KEY, EVENT_TIMESTAMP, STATE_FEATURE
    from features.store import FeatureWriter

    states = feature_data.history.export(np.arange(feature_data.history.size))
    states.loc[0, EVENT_TIMESTAMP] = pd.Timestamp("1969-12-31 23:59:58.5", tz="UTC")  # before the epoch
    ours = FeatureWriter.open(load_settings(data_dir=tmp_path / "ours"))
    ours.write_online(states.iloc[:100])
    ours.write_online(states)  # upserts over the first write
    theirs = FeatureWriter.open(load_settings(data_dir=tmp_path / "theirs")).store
    created = datetime.now(UTC)
    theirs._get_provider().online_write_batch(theirs.config, theirs.get_feature_view(STATE_VIEW), [
        (EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=customer)]),
         {STATE_FEATURE: Value(bytes_val=state)}, moment.to_pydatetime(), created)
        for customer, state, moment in zip(states[ENTITY_KEY], states[STATE_FEATURE], states[EVENT_TIMESTAMP],
                                           strict=True)], None)

    def table(store: object) -> list[tuple]:
        online = store._get_provider().online_store
        connection = online._get_conn(store.config)
        name = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if row[0].endswith(STATE_VIEW)]
        return connection.execute(f'SELECT entity_key, feature_name, value, value_text, event_ts '
                                  f'FROM "{name[0]}" ORDER BY entity_key').fetchall()

    mine, feasts = table(ours.store), table(theirs)
    assert len(mine) == len(states) and mine == feasts


def test_single_customer_latency(feature_data: FeatureData) -> None:
    """Reported, not a pass/fail budget: the benchmark machine is shared."""
    from serving.online import OnlineFeatures

    customer = feature_data.customers[7]
    with OnlineFeatures(feature_data.settings, store=feature_data.store) as online:
        for _ in range(50):
            online.features([customer], [END_S])
        started, calls = time.perf_counter(), 500
        for _ in range(calls):
            online.features([customer], [END_S])
        per_call_us = (time.perf_counter() - started) / calls * 1e6
    print(f"\nOnlineFeatures.features, one customer: {per_call_us:.0f} us per call")
    assert per_call_us < 20_000


def test_store_failures_raise_online_store_unavailable(tmp_path: Path) -> None:
    from features.store import open_feature_store
    from serving.online import OnlineFeatures, OnlineStoreUnavailable

    settings = load_settings(data_dir=tmp_path)
    store = open_feature_store(settings)
    with OnlineFeatures(settings, store=store, wal=False) as online:
        locker = sqlite3.connect(online.sqlite.db_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: readers wait on this lock
        started = time.perf_counter()
        with pytest.raises(OnlineStoreUnavailable, match="did not answer within 50 ms|locked"):
            online.features(["c0000001"], [END_S], timeout_s=0.05)
        assert time.perf_counter() - started < 1.0
        locker.execute("ROLLBACK")
        assert not online.features(["c0000001"], [END_S]).known[0]  # the store recovered

        locker.execute(f'DROP TABLE "{online.sqlite.table}"')
        with pytest.raises(OnlineStoreUnavailable, match="no such table"):
            online.features(["c0000001"], [END_S])
        locker.close()
        Path(online.sqlite.db_path).unlink()
        with pytest.raises(OnlineStoreUnavailable, match="does not exist"):
            online.features(["c0000001"], [END_S])


# -- models ------------------------------------------------------------------------------------------------------


def random_features(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature-shaped random rows and labels that depend on them (so the members learn something)."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(1.0, 1.0, size=(rows, len(FEATURE_NAMES))).astype(np.float32)
    signal = np.log1p(x[:, 0]) - np.log1p(x[:, 1]) + rng.normal(0, 0.5, rows)
    y = np.digitize(signal, np.quantile(signal, [0.3, 0.7]))
    return x, y


def fit_small(seed: int):  # training.model.FittedModels
    from training.model import ModelParams, fit_ensemble

    params = ModelParams(forest_trees=8, forest_max_depth=4, forest_min_samples_leaf=3, booster_rounds=8,
                         booster_max_depth=3, seed=seed, threads=1)
    x, y = random_features(600, seed)
    return fit_ensemble(x[:400], y[:400], x[400:], y[400:], params)


def register(settings: Settings, ensemble: object, workdir: Path, corrupt: bool = False) -> str:
    """Log ``ensemble`` like ``training.pipeline._log_run`` does (garbage ONNX if ``corrupt``), register it."""
    import mlflow

    from model_contract import registry
    from model_contract.artifacts import FALLBACK_ONNX_FILE, ONNX_FILE
    from training.onnx_export import ensemble_to_onnx, fallback_to_onnx, save
    from training.tracking import log_model

    registry.client(settings)  # also makes this registry the process default
    example = pd.DataFrame(random_features(10, 0)[0], columns=list(FEATURE_NAMES))
    with mlflow.start_run(experiment_id=registry.experiment_id(settings)):
        mlflow.log_metrics({"roc_auc": 0.71, "macro_f1": 0.52, "log_loss": 0.9})
        onnx_path = workdir / ONNX_FILE
        workdir.mkdir(parents=True, exist_ok=True)
        if corrupt:
            onnx_path.write_bytes(b"this is not an onnx model")
        else:
            save(ensemble_to_onnx(ensemble), onnx_path)
        fallback_path = save(fallback_to_onnx(ensemble), workdir / FALLBACK_ONNX_FILE)
        info = log_model(ensemble, onnx_path, fallback_path, example, workdir / "model")
    return str(mlflow.register_model(info.model_uri, settings.mlflow.registered_model).version)


def make_champion(settings: Settings, version: str) -> None:
    from model_contract import registry

    registry.client(settings).set_registered_model_alias(settings.mlflow.registered_model, "champion", version)


@dataclass(frozen=True)
class Registry:
    settings: Settings
    models: dict[int, object]  # seed -> FittedModels


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """One MLflow store; each test registers under its own model name so aliases do not interfere."""
    settings = load_settings(data_dir=tmp_path_factory.mktemp("registry"))
    return Registry(settings, {seed: fit_small(seed) for seed in (1, 2)})


def named(registry: Registry, name: str) -> Settings:
    return registry.settings.model_copy(update={"mlflow": registry.settings.mlflow.model_copy(
        update={"registered_model": name})})


def test_holder_scores_like_the_native_ensemble_and_swaps_in_a_new_champion(registry: Registry,
                                                                             tmp_path: Path) -> None:
    from serving.scoring import ModelHolder

    settings = named(registry, "swap")
    first = register(settings, registry.models[1].ensemble, tmp_path / "v1")
    make_champion(settings, first)
    holder = ModelHolder(settings, tmp_path / "cache")
    outcome = holder.load()
    assert outcome.ok and outcome.changed and outcome.champion == first, outcome
    x, _ = random_features(200, 9)
    result = holder.score(x)
    ensemble = registry.models[1].ensemble
    np.testing.assert_allclose(result.probabilities, ensemble.predict_proba(x), atol=1e-5)
    assert (result.label == ensemble.predict(x)).mean() > 0.99  # equal but for float32 near-ties
    assert (result.level, result.degraded, result.model_version) == ("champion", False, first)
    info = holder.info()
    assert (info["version"], info["source"], info["alias"], info["last_error"]) == (first, "registry", "champion",
                                                                                     None)
    assert info["metrics"]["roc_auc"] == pytest.approx(0.71) and info["metrics"]["macro_f1"] == pytest.approx(0.52)
    manifest = (tmp_path / "cache" / "current.json").read_text()
    assert f'"version": "{first}"' in manifest and '"run_id"' in manifest and '"loaded_at"' in manifest

    in_flight = holder.served
    assert holder.load().changed is False  # nothing new: nothing swapped
    second = register(settings, registry.models[2].ensemble, tmp_path / "v2")
    make_champion(settings, second)
    answer = holder.reload()
    assert answer["ok"] and answer["changed"] and answer["champion"] == second, answer
    np.testing.assert_allclose(holder.score(x).probabilities, registry.models[2].ensemble.predict_proba(x), atol=1e-5)
    assert in_flight.champion is not None and in_flight.champion.version == first  # a request's snapshot is intact
    np.testing.assert_allclose(holder.score(x, served=in_flight).probabilities, ensemble.predict_proba(x), atol=1e-5)

    third = register(settings, registry.models[1].ensemble, tmp_path / "v3")
    make_champion(settings, third)
    holder.start_watcher(interval_s=0.2)
    try:
        deadline = time.monotonic() + 60
        while holder.info()["version"] != third:
            assert time.monotonic() < deadline, holder.info()
            time.sleep(0.1)
    finally:
        holder.stop_watcher()
    cached = sorted(path.name for path in (tmp_path / "cache").glob("v*"))
    assert cached == sorted([f"v{second}", f"v{third}"])  # the current and the previous champion are kept


def test_a_corrupt_version_leaves_the_last_good_model(registry: Registry, tmp_path: Path) -> None:
    from serving.scoring import ModelHolder

    settings = named(registry, "corrupt")
    good = register(settings, registry.models[1].ensemble, tmp_path / "good")
    make_champion(settings, good)
    holder = ModelHolder(settings, tmp_path / "cache")
    assert holder.load().ok
    broken = register(settings, registry.models[2].ensemble, tmp_path / "broken", corrupt=True)
    make_champion(settings, broken)
    answer = holder.reload()
    assert not answer["ok"] and not answer["changed"] and answer["champion"] == good
    info = holder.info()
    assert info["version"] == good and f"version {broken} rejected" in info["last_error"]
    x, _ = random_features(20, 4)
    np.testing.assert_allclose(holder.score(x).probabilities, registry.models[1].ensemble.predict_proba(x),
                               atol=1e-5)
    assert holder.load(retry_failed=False).errors == [info["last_error"]]  # the watcher's poll skips it quietly
    assert f'"version": "{good}"' in (tmp_path / "cache" / "current.json").read_text()


def test_without_the_registry_a_holder_starts_from_the_cache(registry: Registry, tmp_path: Path) -> None:
    from serving.scoring import ModelHolder

    settings = named(registry, "cached")
    version = register(settings, registry.models[2].ensemble, tmp_path / "v")
    make_champion(settings, version)
    assert ModelHolder(settings, tmp_path / "cache").load().ok

    offline = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(
        update={"tracking_uri": "http://127.0.0.1:9"})})
    holder = ModelHolder(offline, tmp_path / "cache")
    started = time.perf_counter()
    outcome = holder.startup()
    assert time.perf_counter() - started < 60
    assert outcome.champion == version and outcome.source == "cache", outcome
    info = holder.info()
    assert info["source"] == "cache" and info["version"] == version
    assert "registry unavailable" in info["last_error"] or "registry unavailable" in " ".join(outcome.errors)
    assert info["metrics"]["roc_auc"] == pytest.approx(0.71)
    x, _ = random_features(20, 5)
    np.testing.assert_allclose(holder.score(x).probabilities, registry.models[2].ensemble.predict_proba(x),
                               atol=1e-5)
    assert holder.score(x, "single").degraded  # the fallback came back from the cache too
    assert holder.load().champion == version and holder.info()["source"] == "cache"  # still down: kept

    empty = ModelHolder(offline, tmp_path / "nothing")
    assert empty.startup().champion is None
    result = empty.score_with_fallback(x)
    assert (result.level, result.degraded) == ("heuristic", True)


def test_fallback_levels_give_valid_degraded_probabilities(registry: Registry, feature_data: FeatureData,
                                                           tmp_path: Path) -> None:
    from serving.online import OnlineFeatures
    from serving.scoring import ModelHolder, ModelUnavailable
    from training.model import SingleModel, Stacker

    settings = named(registry, "fallbacks")
    make_champion(settings, register(settings, registry.models[1].ensemble, tmp_path / "v"))
    holder = ModelHolder(settings, tmp_path / "cache")
    assert holder.load().ok
    with OnlineFeatures(feature_data.settings, store=feature_data.store) as online:
        customers, as_of = request_rows(feature_data, n=60, seed=5)
        x = online.features(customers, as_of).matrix
    booster = registry.models[1].ensemble.booster
    native_single = SingleModel("xgboost", booster, Stacker(np.eye(3), np.zeros(3)), np.ones(3))
    for level in ("single", "heuristic"):
        result = holder.score(x, level)
        assert result.degraded and result.level == level
        assert result.probabilities.shape == (60, 3) and np.isfinite(result.probabilities).all()
        assert (result.probabilities >= 0).all()
        np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert set(result.label_names) <= {"decline", "stable", "growth"}
        if level == "single":
            np.testing.assert_allclose(result.probabilities, native_single.predict_proba(x), atol=1e-5)
    with pytest.raises(ModelUnavailable):
        holder.score(x, "challenger")
    assert holder.score_with_fallback(x, prefer="challenger").level == "champion"

    class Broken:
        class session:  # stands in for an onnxruntime session
            @staticmethod
            def run(*_: object) -> None:
                raise RuntimeError("onnxruntime exploded")

    served = holder.served
    holder._served = replace(served, champion=replace(served.champion, scorer=Broken()))
    result = holder.score_with_fallback(x)
    assert (result.level, result.degraded, result.model_version) == ("single", True, served.champion.version)
    holder._served = replace(holder.served, single=None)
    assert holder.score_with_fallback(x).level == "heuristic"
