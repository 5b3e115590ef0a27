"""The Feast feature repo, declared: entity, sources, the state view, THE transform, the service.

``features.store.open_feature_store`` applies these objects to a repo under the data directory
(``definitions``: the state view's batch source follows the setting ``feature_store.offline_store``).
The on-demand view's body is stored in Feast's registry as source text and re-executed with
only ``pd``/``np`` in scope, so it imports the shared transform inside the function.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource, ValueType
from feast.data_source import DataSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bytes, Float64, Int64

from features.state import CREATED_TIMESTAMP, ENTITY_KEY, EVENT_TIMESTAMP, STATE_FEATURE
from features.transform import AS_OF, FEATURE_NAMES

STATE_VIEW = "customer_activity_state"
FEATURES_VIEW = "customer_activity"
FEATURE_SERVICE = "customer_activity_v1"
OFFLINE_DIR = "data/customer_activity_state"  # relative to the repo: a directory of parquet files

customer = Entity(
    name="customer", join_keys=[ENTITY_KEY], value_type=ValueType.STRING,
    description="A customer of the upstream services, keyed like the transactions topic.",
)

STATE_SOURCE = "customer_activity_state_files"  # one name for either kind: a switch replaces it in the registry

state_source = FileSource(
    name=STATE_SOURCE,
    path=OFFLINE_DIR,
    timestamp_field=EVENT_TIMESTAMP,  # the newest event folded into the state
    created_timestamp_column=CREATED_TIMESTAMP,  # when it was written: breaks ties
)


def spark_state_source(offline_dir: Path) -> DataSource:
    """The same parquet files as ``state_source``, for Feast's Spark offline store.

    The path is absolute (Spark does not know the repo) with an explicit ``file://`` (a cluster's
    default file system may be HDFS; on a cluster every executor must see the data directory).
    """
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    return SparkSource(
        name=STATE_SOURCE,
        path=f"file://{offline_dir.resolve()}",
        file_format="parquet",
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
    )


def _state_view(batch_source: DataSource) -> tuple[PushSource, FeatureView]:
    push = PushSource(name="customer_activity_state_push", batch_source=batch_source)
    view = FeatureView(
        name=STATE_VIEW,
        entities=[customer],
        ttl=timedelta(0),  # no TTL: the windows in the transform do the forgetting
        online=True,
        source=push,
        schema=[Field(name=STATE_FEATURE, dtype=Bytes)],
        description="Each customer's day-indexed activity history (features.state.STATE_DTYPE), written by the stream.",
    )
    return push, view


state_push, activity_state = _state_view(state_source)

prediction_time = RequestSource(
    name="prediction_time",
    schema=[Field(name=AS_OF, dtype=Int64)],
    description="The time the prediction is for (epoch seconds, UTC).",
)


@on_demand_feature_view(
    sources=[activity_state, prediction_time],
    schema=[Field(name=name, dtype=Float64) for name in FEATURE_NAMES],
    mode="python",
    description="Window features relative to the request time: features.transform.window_features.",
)
def customer_activity(inputs: dict[str, Any]) -> dict[str, Any]:
    from features.transform import feast_transform

    return feast_transform(inputs)


activity_service = FeatureService(name=FEATURE_SERVICE, features=[customer_activity],
                                  description="What the activity model reads, in training and in serving.")

DEFINITIONS = [customer, state_source, state_push, activity_state, prediction_time, customer_activity,
               activity_service]


def definitions(offline_store: Literal["file", "spark"], offline_dir: Path) -> list[Any]:
    """What ``open_feature_store`` applies: ``DEFINITIONS``, or the same repo with the state view's batch
    source a ``SparkSource`` over ``offline_dir`` (the on-demand view and the service only name the view)."""
    if offline_store == "file":
        return DEFINITIONS
    source = spark_state_source(offline_dir)
    push, view = _state_view(source)
    return [customer, source, push, view, prediction_time, customer_activity, activity_service]
