"""The file offline store: Feast's, with a point-in-time join linear in its rows and bounded in memory.

Feast's file (dask) store merges every entity row with every stored row of the same customer,
then keeps the newest one not after the row's time. Its cost is entity rows x stored rows per
customer x the size of a stored row, and once a column of that merge passes 2 GiB of binary,
pyarrow's ``take`` crashes the process instead of raising. Here:

1. the join runs over the keys alone (customer, event time, write time; ``features.point_in_time``),
   one sort and one merge pass: linear in entity rows plus stored rows;
2. the stored values are read one parquet row group at a time, only where a row matched;
3. the on-demand views (THE transform) run on slices of at most ``batch_rows`` entity rows, so
   only features, never a copy of a state per entity row, accumulate.

The memory of a retrieval is the keys' index plus one row group and one slice, whatever the data;
the index has a ceiling (``memory_limit_mb``) checked from the files' metadata before anything is
read, and a retrieval past it fails with ``RetrievalTooLarge`` naming the setting. Plugged in
through Feast's extension point (``offline_store.type`` names the class), so
``FeatureStore.get_historical_features`` and the feature service work as with any store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from feast import FeatureView, FileSource, OnDemandFeatureView
from feast.data_source import DataSource
from feast.infra.offline_stores.dask import DaskOfflineStore, DaskOfflineStoreConfig
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
from feast.repo_config import RepoConfig
from pydantic import StrictInt

from activity_settings import ActivityError
from features.point_in_time import (
    INDEX_BYTES_PER_ROW,
    NO_MATCH,
    as_of_match,
    customer_codes,
    to_utc_microseconds,
)

STORE_TYPE = "features.offline_store.AsOfFileOfflineStore"
DEFAULT_BATCH_ROWS, DEFAULT_MEMORY_LIMIT_MB = 50_000, 2_048
POSITION = "__position"  # an entity row's place in the entity frame, carried beside its features
MEMORY_SETTING = "feature_store.retrieval_memory_mb (ACTIVITY_FEATURE_STORE__RETRIEVAL_MEMORY_MB)"


class RetrievalTooLarge(ActivityError, RuntimeError):
    """A point-in-time retrieval whose join index would pass the memory ceiling."""


class AsOfFileOfflineStoreConfig(DaskOfflineStoreConfig):
    """``offline_store`` of a repo using ``AsOfFileOfflineStore``."""

    type: Literal["features.offline_store.AsOfFileOfflineStore"] = STORE_TYPE  # type: ignore[assignment]
    batch_rows: StrictInt = DEFAULT_BATCH_ROWS
    """Entity rows whose states are decoded and transformed together."""
    memory_limit_mb: StrictInt = DEFAULT_MEMORY_LIMIT_MB
    """Ceiling of the join's index (keys of entity and stored rows)."""


class AsOfFileOfflineStore(DaskOfflineStore):
    """The file store, whose historical retrieval is ``AsOfRetrievalJob`` for an entity frame."""

    @staticmethod
    def get_historical_features(config: RepoConfig, feature_views: list[FeatureView], feature_refs: list[str],
                                entity_df: pd.DataFrame | str | None, registry: Any, project: str,
                                full_feature_names: bool = False, filter_by_created_timestamp: bool = False,
                                **kwargs: Any) -> RetrievalJob:
        plan = plan_retrieval(config, feature_views, feature_refs, entity_df, registry, project, full_feature_names,
                              _file_path)
        if plan is None:  # shapes this store does not join itself (no entity frame, several views or keys)
            return DaskOfflineStore.get_historical_features(config, feature_views, feature_refs, entity_df,
                                                            registry, project, full_feature_names,
                                                            filter_by_created_timestamp, **kwargs)
        return AsOfRetrievalJob(plan)


@dataclass(frozen=True)
class RetrievalPlan:
    """What one retrieval reads and computes."""

    entity_df: pd.DataFrame
    time_column: str
    join_key: str
    source_path: str
    timestamp_field: str
    created_field: str | None
    stored_features: tuple[str, ...]  # the view's columns the transform (or the caller) needs
    direct_features: tuple[str, ...]  # those the caller asked for itself: returned as they are stored
    output_names: dict[str, str]  # stored column -> name in the result (full names or not)
    on_demand_views: tuple[OnDemandFeatureView, ...]
    on_demand_outputs: dict[str, frozenset[str]]  # view name -> the columns asked for
    ttl_us: int | None
    batch_rows: int
    memory_limit_mb: int
    full_feature_names: bool
    metadata: RetrievalMetadata


def _file_path(config: RepoConfig, source: DataSource) -> str | None:
    if not isinstance(source, FileSource):
        return None
    return FileSource.get_uri_for_file_path(repo_path=config.repo_path, uri=source.file_options.uri)


def plan_retrieval(config: RepoConfig, feature_views: list[FeatureView], feature_refs: list[str], entity_df: object,
                   registry: Any, project: str, full_feature_names: bool,
                   source_path: Callable[[RepoConfig, DataSource], str | None]) -> RetrievalPlan | None:
    """The plan of a retrieval this module's join serves, or None: several views or join keys, renamed
    columns, no entity frame, a source ``source_path`` cannot locate (parquet files)."""
    if not isinstance(entity_df, pd.DataFrame) or len(feature_views) != 1:
        return None
    view = feature_views[0]
    source = view.batch_source
    if source is None:
        return None
    path = source_path(config, source)
    if path is None or len(view.entity_columns) != 1 or source.field_mapping:
        return None
    join_key = view.projection.join_key_map.get(view.entity_columns[0].name, view.entity_columns[0].name)
    if join_key not in entity_df.columns or DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL not in entity_df.columns:
        return None
    odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
    view_name = view.projection.name_to_use()
    direct = tuple(ref.split(":", 1)[1] for ref in feature_refs if ref.split(":", 1)[0] == view_name)
    needed = set(direct)
    for odfv in odfvs:
        for projection in odfv.source_feature_view_projections.values():
            if projection.name == view.name:
                needed.update(feature.name for feature in projection.features)
    stored = tuple(feature.name for feature in view.features if feature.name in needed)
    names = {name: f"{view_name}__{name}" if full_feature_names else name for name in stored}
    outputs: dict[str, set[str]] = {}
    for ref in feature_refs:
        prefix, feature = ref.split(":", 1)
        for odfv in odfvs:
            if prefix in (odfv.name, odfv.projection.name_to_use()):
                outputs.setdefault(odfv.name, set()).add(
                    f"{odfv.projection.name_to_use()}__{feature}" if full_feature_names else feature)
    offline = config.offline_store
    times = pd.to_datetime(entity_df[DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL], utc=True)
    return RetrievalPlan(
        entity_df=entity_df,
        time_column=DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL,
        join_key=join_key,
        source_path=path,
        timestamp_field=source.timestamp_field,
        created_field=source.created_timestamp_column or None,
        stored_features=stored,
        direct_features=tuple(name for name in stored if name in direct),
        output_names=names,
        on_demand_views=tuple(odfvs),
        on_demand_outputs={name: frozenset(columns) for name, columns in outputs.items()},
        ttl_us=int(view.ttl / timedelta(microseconds=1)) if view.ttl else None,
        batch_rows=int(getattr(offline, "batch_rows", DEFAULT_BATCH_ROWS)),
        memory_limit_mb=int(getattr(offline, "memory_limit_mb", DEFAULT_MEMORY_LIMIT_MB)),
        full_feature_names=full_feature_names,
        metadata=RetrievalMetadata(features=feature_refs,
                                   keys=[c for c in entity_df.columns if c != DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL],
                                   min_event_timestamp=times.min().to_pydatetime() if len(times) else None,
                                   max_event_timestamp=times.max().to_pydatetime() if len(times) else None),
    )


class AsOfRetrievalJob(RetrievalJob):
    """Runs a ``RetrievalPlan``: the entity frame, in its order, with the features asked for."""

    def __init__(self, plan: RetrievalPlan) -> None:
        self.plan = plan

    @property
    def full_feature_names(self) -> bool:
        return self.plan.full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return []  # applied here, slice by slice, not by RetrievalJob.to_arrow on the whole result

    @property
    def metadata(self) -> RetrievalMetadata:
        return self.plan.metadata

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return retrieve(self.plan)

    def persist(self, storage: Any, allow_overwrite: bool | None = False, timeout: int | None = None) -> None:
        raise NotImplementedError("saved datasets are not used by this platform's offline store")


@dataclass(frozen=True)
class _StoredRows:
    """The stored rows' keys, and where each row lives (file, row group, row within it)."""

    codes: np.ndarray
    times_us: np.ndarray
    created_us: np.ndarray
    files: list[str]
    group_starts: list[np.ndarray]  # per file: the global position of each row group's first row
    file_starts: np.ndarray  # global position of each file's first row


def retrieve(plan: RetrievalPlan) -> pa.Table:
    """The point-in-time join of ``plan``, the on-demand views applied per slice, rows in entity order."""
    entities = plan.entity_df.reset_index(drop=True)
    dataset = ds.dataset(plan.source_path, format="parquet")  # hidden (".", "_") files are skipped
    fragments = [fragment for fragment in dataset.get_fragments() if fragment.metadata.num_rows]
    stored_count = sum(fragment.metadata.num_rows for fragment in fragments)
    _check_memory(len(entities), stored_count, plan.memory_limit_mb)
    stored, stored_keys = _read_keys(fragments, plan)
    entity_codes, stored_codes = customer_codes(pa.array(entities[plan.join_key].astype(str).to_numpy()),
                                                stored_keys)
    stored.codes[:] = stored_codes
    del stored_keys, stored_codes
    matches = as_of_match(entity_codes, to_utc_microseconds(entities[plan.time_column]), stored.codes,
                          stored.times_us, stored.created_us, plan.ttl_us)
    parts = [_slice_features(plan, entities, positions, values)
             for positions, values in _matched_values(plan, stored, matches)]
    return in_entity_order(entities, pa.concat_tables(parts) if parts else None)


def in_entity_order(entities: pd.DataFrame, features: pa.Table | None) -> pa.Table:
    """``entities`` with the columns of ``features`` beside them, its rows put back by ``POSITION``."""
    result = pa.Table.from_pandas(entities, preserve_index=False)
    if features is None:
        return result
    order = np.argsort(features.column(POSITION).to_numpy(), kind="stable")
    features = features.drop_columns([POSITION]).take(pa.array(order))
    for name in features.column_names:
        result = result.append_column(name, features.column(name))
    return result


def _check_memory(entity_rows: int, stored_rows: int, limit_mb: int) -> None:
    needed_mb = (entity_rows + stored_rows) * INDEX_BYTES_PER_ROW / 2**20
    if needed_mb > limit_mb:
        raise RetrievalTooLarge(
            f"a point-in-time retrieval of {entity_rows:,} entity rows over {stored_rows:,} stored rows needs about "
            f"{needed_mb:,.0f} MB for its join index, over the limit of {limit_mb:,} MB: raise {MEMORY_SETTING}, "
            "or ask for fewer rows (training.max_rows, a coarser training.grid_days)")


def _read_keys(fragments: list[ds.ParquetFileFragment], plan: RetrievalPlan) -> tuple[_StoredRows, pa.ChunkedArray]:
    columns = [plan.join_key, plan.timestamp_field, *([plan.created_field] if plan.created_field else [])]
    keys, times, created, group_starts, file_starts = [], [], [], [], []
    position = 0
    for fragment in fragments:
        table = fragment.to_table(columns=columns)
        keys.extend(table.column(plan.join_key).cast(pa.string()).chunks)
        times.append(to_utc_microseconds(table.column(plan.timestamp_field)))
        created.append(to_utc_microseconds(table.column(plan.created_field)) if plan.created_field
                       else np.zeros(table.num_rows, dtype=np.int64))
        sizes = [fragment.metadata.row_group(i).num_rows for i in range(fragment.metadata.num_row_groups)]
        file_starts.append(position)
        group_starts.append(position + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64))
        position += table.num_rows
    count = position
    stored = _StoredRows(
        codes=np.empty(count, dtype=np.int32),
        times_us=np.concatenate(times) if times else np.empty(0, dtype=np.int64),
        created_us=np.concatenate(created) if created else np.empty(0, dtype=np.int64),
        files=[fragment.path for fragment in fragments],
        group_starts=group_starts,
        file_starts=np.asarray(file_starts, dtype=np.int64),
    )
    return stored, pa.chunked_array(keys, type=pa.string())


def _matched_values(plan: RetrievalPlan, stored: _StoredRows,
                    matches: np.ndarray) -> Iterator[tuple[np.ndarray, dict[str, pa.Array]]]:
    """Slices of entity positions (at most ``batch_rows``) with their matched stored values.

    Row groups are read in file order, each once, and only if some entity row matched in it;
    rows without a match come last, with null values (the transform's cold start).
    """
    order = np.argsort(matches, kind="stable")
    sorted_matches = matches[order]
    unmatched = int(np.searchsorted(sorted_matches, NO_MATCH, side="right"))
    if unmatched:
        yield from _batches(plan, order[:unmatched], None, None)
    order, sorted_matches = order[unmatched:], sorted_matches[unmatched:]
    for file_no, path in enumerate(stored.files):
        starts = stored.group_starts[file_no]
        ends = np.append(starts[1:], stored.file_starts[file_no + 1] if file_no + 1 < len(stored.files)
                         else len(stored.codes))
        if not len(starts):
            continue
        lo = int(np.searchsorted(sorted_matches, starts[0]))
        hi = int(np.searchsorted(sorted_matches, ends[-1]))
        if lo == hi:
            continue
        parquet = pq.ParquetFile(path)
        for group, (start, end) in enumerate(zip(starts, ends, strict=True)):
            first = int(np.searchsorted(sorted_matches, start))
            last = int(np.searchsorted(sorted_matches, end))
            if first == last:
                continue
            values = parquet.read_row_group(group, columns=list(plan.stored_features))
            yield from _batches(plan, order[first:last], values, sorted_matches[first:last] - start)


def _batches(plan: RetrievalPlan, positions: np.ndarray, values: pa.Table | None,
             local_rows: np.ndarray | None) -> Iterator[tuple[np.ndarray, dict[str, pa.Array]]]:
    for first in range(0, len(positions), plan.batch_rows):
        part = positions[first : first + plan.batch_rows]
        if values is None or local_rows is None:
            columns = {name: pa.nulls(len(part), type=pa.binary()) for name in plan.stored_features}
        else:
            take = pa.array(local_rows[first : first + plan.batch_rows])
            columns = {name: values.column(name).take(take).combine_chunks() for name in plan.stored_features}
        yield part, columns


def _slice_features(plan: RetrievalPlan, entities: pd.DataFrame, positions: np.ndarray,
                    values: dict[str, pa.Array]) -> pa.Table:
    """One slice: its entity rows with their stored values through every on-demand view."""
    table = pa.Table.from_pandas(entities.iloc[positions], preserve_index=False)
    for name, column in values.items():
        table = table.append_column(plan.output_names[name], column)
    columns = requested_columns(table, plan.on_demand_views, plan.on_demand_outputs,
                                [plan.output_names[name] for name in plan.direct_features], plan.full_feature_names)
    return pa.table({POSITION: pa.array(positions, type=pa.int64()), **columns})


def requested_columns(table: pa.Table, views: Sequence[OnDemandFeatureView], outputs: dict[str, frozenset[str]],
                      direct: Sequence[str], full_feature_names: bool) -> dict[str, pa.ChunkedArray]:
    """What a retrieval returns for rows of ``table`` (entity columns and stored values): the stored
    columns asked for themselves, then every on-demand view's requested outputs, as Feast's
    ``RetrievalJob.to_arrow`` selects them."""
    columns = {name: table.column(name) for name in direct}
    for odfv in views:
        transformed = odfv.transform_arrow(table, full_feature_names)
        wanted = outputs.get(odfv.name)
        for column in transformed.column_names:
            if column.startswith("__index") or column in table.column_names:
                continue
            if wanted is None or column in wanted:
                columns[column] = transformed.column(column)
    return columns
