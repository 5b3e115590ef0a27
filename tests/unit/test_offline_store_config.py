"""The offline store setting: feature_store.yaml, the state view's batch source, and how answers are evened out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from activity_settings import Settings, load_settings
from features.state import ENTITY_KEY, EVENT_TIMESTAMP
from features.store import SPARK_APP, SPARK_STORE_TYPE, _aligned, feature_store_yaml
from features.transform import AS_OF, FEATURE_NAMES, features_frame
from infra.spark import session_conf


def settings_with(tmp_path: Path, offline_store: str, master: str = "local[2]") -> Settings:
    return load_settings(data_dir=tmp_path, spark={"master": master, "driver_memory": "3g", "shuffle_partitions": 6},
                         feature_store={"offline_store": offline_store})


def test_the_file_store_yaml_names_the_platforms_store_and_its_limits(clean_env: None, tmp_path: Path) -> None:
    from feast.repo_config import RepoConfig

    from features.offline_store import AsOfFileOfflineStoreConfig

    settings = load_settings(data_dir=tmp_path, feature_store={"retrieval_memory_mb": 512,
                                                               "retrieval_batch_rows": 1_000})
    parsed = yaml.safe_load(feature_store_yaml(settings))
    assert parsed["offline_store"] == {"type": "features.offline_store.AsOfFileOfflineStore", "batch_rows": 1_000,
                                       "memory_limit_mb": 512}
    config = RepoConfig(repo_path=tmp_path, **parsed)  # Feast finds the class and its config by the type's name
    assert isinstance(config.offline_store, AsOfFileOfflineStoreConfig)
    assert config.offline_store.memory_limit_mb == 512


@pytest.mark.parametrize(("master", "loopback"), [("local[2]", True), ("spark://spark-master:7077", False)])
def test_the_spark_store_yaml_carries_the_platforms_session_conf(clean_env: None, tmp_path: Path, master: str,
                                                                   loopback: bool) -> None:
    from feast.repo_config import RepoConfig

    settings = settings_with(tmp_path, "spark", master)
    parsed = yaml.safe_load(feature_store_yaml(settings))
    conf = parsed["offline_store"]["spark_conf"]
    assert parsed["offline_store"]["type"] == SPARK_STORE_TYPE
    assert conf == {"spark.app.name": SPARK_APP, **session_conf(settings)}
    assert conf["spark.master"] == master and conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.sql.shuffle.partitions"] == "6" and conf["spark.driver.memory"] == "3g"
    assert ("spark.driver.bindAddress" in conf) is loopback and ("spark.executor.memory" in conf) is not loopback
    config = RepoConfig(repo_path=tmp_path, **parsed)  # Feast's own model of the file accepts it
    assert config.offline_store.spark_conf["spark.master"] == master
    assert type(config.offline_store).__name__ == "AsOfSparkOfflineStoreConfig"


@pytest.mark.filterwarnings("ignore:The spark data source API is an experimental feature")
def test_spark_definitions_change_only_the_state_views_batch_source(tmp_path: Path) -> None:
    from features.repo import DEFINITIONS, STATE_VIEW, definitions, state_source

    assert definitions("file", tmp_path) is DEFINITIONS
    spark = definitions("spark", tmp_path / "offline")
    assert [type(d).__name__ for d in spark] == [type(d).__name__.replace("FileSource", "SparkSource")
                                                 for d in DEFINITIONS]
    assert [d.name for d in spark] == [d.name for d in DEFINITIONS]
    source = spark[1]
    assert source.path == f"file://{(tmp_path / 'offline').resolve()}" and source.file_format == "parquet"
    assert (source.timestamp_field, source.created_timestamp_column) == (state_source.timestamp_field,
                                                                         state_source.created_timestamp_column)
    view = next(d for d in spark if d.name == STATE_VIEW)
    assert view.batch_source is source


def test_answers_are_matched_to_the_entity_rows_in_their_order(clean_env: None) -> None:
    """Any order, naive (UTC) times, a row twice (an exact tie in Spark), a row missing (the file store drops a row
    before the customer's first state): the entity rows in order, the missing one with the cold start."""
    times = pd.to_datetime(["2026-03-01 10:00:00.123456", "2026-03-02 00:00:00.000000", "2026-03-03 00:00:00.000000",
                            "2026-03-04 00:00:00.000000"], utc=True)
    frame = pd.DataFrame({ENTITY_KEY: ["a", "b", "c", "a"], EVENT_TIMESTAMP: times, "label": [0, 1, 2, 3]})
    frame[AS_OF] = times.as_unit("s").asi8
    answered = pd.DataFrame({ENTITY_KEY: ["a", "c", "a", "a"],
                             EVENT_TIMESTAMP: times[[3, 2, 0, 0]].tz_localize(None).as_unit("us"),
                             **{name: [4.0, 3.0, 1.0, 1.0] for name in FEATURE_NAMES}})
    aligned = _aligned(frame, answered)
    assert list(aligned.columns) == [*frame.columns, *FEATURE_NAMES] and aligned.index.equals(pd.RangeIndex(4))
    pd.testing.assert_frame_equal(aligned[frame.columns], frame)
    np.testing.assert_array_equal(aligned.loc[[0, 2, 3], "tx_count_90d"], [1.0, 3.0, 4.0])
    cold = features_frame([None], frame.loc[[1], AS_OF].to_numpy())
    np.testing.assert_array_equal(aligned.loc[[1], list(FEATURE_NAMES)].to_numpy(), cold.to_numpy())


def test_opening_a_spark_store_starts_no_spark_and_switching_replaces_the_source(clean_env: None,
                                                                                 tmp_path: Path) -> None:
    """The scorer and the stream open the store too: only a historical retrieval may start Spark."""
    from pyspark import SparkContext

    from features.repo import STATE_SOURCE
    from features.store import open_feature_store

    if SparkContext._active_spark_context is not None:
        pytest.skip("a SparkContext is already running in this process")
    for kind, source_type in (("file", "FileSource"), ("spark", "SparkSource"), ("file", "FileSource")):
        store = open_feature_store(settings_with(tmp_path, kind))
        assert type(store.get_data_source(STATE_SOURCE)).__name__ == source_type
        assert type(store.get_feature_view("customer_activity_state").batch_source).__name__ == source_type
    assert SparkContext._active_spark_context is None
