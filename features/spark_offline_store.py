"""The Spark offline store: Feast's, with the point-in-time join as a sort, and the transform on executors.

Feast's Spark store joins every entity row with every stored row of its customer not after it,
carrying the stored values through that join, three aggregations and a last join back: a shuffle
of entity rows x stored rows per customer x the size of a state, and then the driver collects one
state per entity row and runs the on-demand view over all of them at once. Here:

1. entity rows and stored rows are one relation sorted per customer by time (a stored row before
   an entity row at the same time, older writes before newer ones), and each entity row takes the
   last stored values before it (``last(..., ignorenulls)`` over the window): a sort, linear in
   entity rows plus stored rows;
2. the on-demand views (THE transform) run on the executors (``mapInArrow``, batches of
   ``batch_rows``), so only features reach the driver, never a state per entity row.

Feast's own classes stay the interface: ``offline_store.type`` names this class, and the views are
rebuilt on the executors from their registry protos.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureView, OnDemandFeatureView
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
    get_spark_session_or_start_new_with_repoconfig,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.protos.feast.core.OnDemandFeatureView_pb2 import OnDemandFeatureView as OnDemandFeatureViewProto
from feast.repo_config import RepoConfig
from pydantic import StrictInt

from features.offline_store import (
    DEFAULT_BATCH_ROWS,
    POSITION,
    AsOfRetrievalJob,
    RetrievalPlan,
    in_entity_order,
    plan_retrieval,
    requested_columns,
)
from features.point_in_time import to_utc_microseconds

STORE_TYPE = "features.spark_offline_store.AsOfSparkOfflineStore"
_KEY, _TIME, _CREATED, _KIND = "__key", "__time_us", "__created_us", "__kind"
_ENTITY, _VALUES = "__entity", "__values"


class AsOfSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    """``offline_store`` of a repo using ``AsOfSparkOfflineStore`` (Feast's Spark settings, and ours)."""

    type: Literal["features.spark_offline_store.AsOfSparkOfflineStore"] = STORE_TYPE  # type: ignore[assignment]
    batch_rows: StrictInt = DEFAULT_BATCH_ROWS
    """Rows per Arrow batch the executors transform."""


class AsOfSparkOfflineStore(SparkOfflineStore):
    """Feast's Spark store, whose historical retrieval is ``AsOfSparkRetrievalJob`` for an entity frame."""

    @staticmethod
    def get_historical_features(config: RepoConfig, feature_views: list[FeatureView], feature_refs: list[str],
                                entity_df: Any, registry: Any, project: str, full_feature_names: bool = False,
                                filter_by_created_timestamp: bool = False, **kwargs: Any) -> RetrievalJob:
        plan = plan_retrieval(config, feature_views, feature_refs, entity_df, registry, project, full_feature_names,
                              _parquet_path)
        if plan is None:
            return SparkOfflineStore.get_historical_features(config, feature_views, feature_refs, entity_df,
                                                             registry, project, full_feature_names,
                                                             filter_by_created_timestamp, **kwargs)
        return AsOfSparkRetrievalJob(plan, config)


def _parquet_path(config: RepoConfig, source: DataSource) -> str | None:
    if isinstance(source, SparkSource) and source.path and (source.file_format or "parquet") == "parquet":
        return source.path
    return None


@dataclass(frozen=True)
class _Executors:
    """What the executors need to transform a batch: small, picklable (no entity frame)."""

    view_protos: tuple[bytes, ...]
    outputs: dict[str, frozenset[str]]
    direct: tuple[str, ...]
    value_names: dict[str, str]  # stored column -> name the views read
    entity_columns: tuple[str, ...]
    full_feature_names: bool
    schema: pa.Schema  # of the batches returned

    def transform(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        views = [OnDemandFeatureView.from_proto(OnDemandFeatureViewProto.FromString(proto))
                 for proto in self.view_protos]
        for batch in batches:
            rows = pa.Table.from_batches([batch])
            entity = rows.column(_ENTITY).combine_chunks()
            values = rows.column(_VALUES).combine_chunks()
            table = pa.table({name: entity.field(name) for name in self.entity_columns})
            for stored, name in self.value_names.items():
                table = table.append_column(name, values.field(stored))
            columns = requested_columns(table, views, self.outputs, self.direct, self.full_feature_names)
            out = pa.table({POSITION: rows.column(POSITION), **columns})
            yield from out.select(self.schema.names).cast(self.schema).to_batches()


class AsOfSparkRetrievalJob(AsOfRetrievalJob):
    """Runs a ``RetrievalPlan`` on Spark: the entity frame, in its order, with the features asked for
    (the on-demand views applied on the executors)."""

    def __init__(self, plan: RetrievalPlan, config: RepoConfig) -> None:
        super().__init__(plan)
        self.config = config

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        from pyspark.sql import functions as F  # Spark's own convention
        from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
        from pyspark.sql.window import Window

        plan = self.plan
        spark = get_spark_session_or_start_new_with_repoconfig(self.config.offline_store)
        entities = plan.entity_df.reset_index(drop=True)
        stored = spark.read.parquet(plan.source_path)
        rows = _stored_rows(stored, plan).unionByName(_entity_rows(spark, entities, plan), allowMissingColumns=True)
        window = (Window.partitionBy(_KEY).orderBy(_TIME, _KIND, _CREATED)
                  .rowsBetween(Window.unboundedPreceding, Window.currentRow))
        matched_time = F.last(F.when(F.col(_KIND) == 0, F.col(_TIME)), ignorenulls=True).over(window)
        values = F.last(F.col(_VALUES), ignorenulls=True).over(window)
        if plan.ttl_us is not None:
            values = F.when(F.col(_TIME) - matched_time <= plan.ttl_us, values)
        joined = (rows.select(POSITION, _KIND, _ENTITY, values.alias(_VALUES))
                  .where(F.col(_KIND) == 1).drop(_KIND))
        schema = output_schema(plan, to_arrow_schema(stored.schema, timezone="UTC"))
        executors = self._executors(entities, schema)
        return in_entity_order(entities, joined.mapInArrow(executors.transform, from_arrow_schema(schema)).toArrow())

    def _executors(self, entities: pd.DataFrame, schema: pa.Schema) -> _Executors:
        plan = self.plan
        return _Executors(
            view_protos=tuple(view.to_proto().SerializeToString() for view in plan.on_demand_views),
            outputs=plan.on_demand_outputs,
            direct=tuple(plan.output_names[name] for name in plan.direct_features),
            value_names=dict(plan.output_names),
            entity_columns=tuple(entities.columns),
            full_feature_names=plan.full_feature_names,
            schema=schema,
        )


def _stored_rows(stored: Any, plan: RetrievalPlan) -> Any:
    from pyspark.sql import functions as F

    created = (F.unix_micros(F.col(plan.created_field).cast("timestamp")) if plan.created_field
               else F.lit(0).cast("long"))
    return stored.select(
        F.col(plan.join_key).cast("string").alias(_KEY),
        F.unix_micros(F.col(plan.timestamp_field).cast("timestamp")).alias(_TIME),
        created.alias(_CREATED),
        F.lit(0).alias(_KIND),
        F.struct(*[F.col(name) for name in plan.stored_features]).alias(_VALUES),
    )


def _entity_rows(spark: Any, entities: pd.DataFrame, plan: RetrievalPlan) -> Any:
    from pyspark.sql import functions as F

    keys = pa.table({_KEY: pa.array(entities[plan.join_key].astype(str).to_numpy()),
                     _TIME: pa.array(to_utc_microseconds(entities[plan.time_column])),
                     POSITION: pa.array(np.arange(len(entities), dtype=np.int64))})
    table = pa.Table.from_pandas(entities, preserve_index=False)
    struct = pa.StructArray.from_arrays([column.combine_chunks() for column in table.columns],
                                        names=table.column_names)
    rows = spark.createDataFrame(keys.append_column(_ENTITY, struct))
    return rows.select(_KEY, _TIME, F.lit(1).alias(_KIND), POSITION, _ENTITY)


def output_schema(plan: RetrievalPlan, stored_schema: pa.Schema) -> pa.Schema:
    """The executors' output: positions, the stored columns asked for, the views' requested features."""
    from feast.type_map import feast_value_type_to_pa

    fields = [pa.field(POSITION, pa.int64())]
    fields += [pa.field(plan.output_names[name], stored_schema.field(name).type) for name in plan.direct_features]
    for odfv in plan.on_demand_views:
        wanted = plan.on_demand_outputs.get(odfv.name)
        for feature in odfv.features:
            name = f"{odfv.projection.name_to_use()}__{feature.name}" if plan.full_feature_names else feature.name
            if wanted is None or name in wanted:
                fields.append(pa.field(name, feast_value_type_to_pa(feature.dtype.to_value_type())))
    return pa.schema(fields)
