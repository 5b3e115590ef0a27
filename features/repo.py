"""The Feast feature repo, declared: entity, sources, the state view, THE transform, the service.

``features.store.open_feature_store`` applies these objects to a repo under the data directory.
The on-demand view's body is stored in Feast's registry as source text and re-executed with
only ``pd``/``np`` in scope, so it imports the shared transform inside the function.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource, ValueType
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

state_source = FileSource(
    name="customer_activity_state_files",
    path=OFFLINE_DIR,
    timestamp_field=EVENT_TIMESTAMP,  # the newest event folded into the state
    created_timestamp_column=CREATED_TIMESTAMP,  # when it was written: breaks ties
)

state_push = PushSource(name="customer_activity_state_push", batch_source=state_source)

activity_state = FeatureView(
    name=STATE_VIEW,
    entities=[customer],
    ttl=timedelta(0),  # no TTL: the windows in the transform do the forgetting
    online=True,
    source=state_push,
    schema=[Field(name=STATE_FEATURE, dtype=Bytes)],
    description="Each customer's day-indexed activity history (features.state.STATE_DTYPE), written by the stream.",
)

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
