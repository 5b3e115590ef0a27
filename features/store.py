"""The feature store under the data directory: create and apply the repo, write states, read features.

Writes bypass Feast's DataFrame conversion (the slow part for a binary feature) but go through
Feast's own provider for the online store and Feast's own offline layout (parquet files in the
source's directory), so everything Feast reads is what Feast itself would have written.
"""

from __future__ import annotations

import json
import logging
import warnings
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from activity_settings import Settings
from features.offline_store import STORE_TYPE as FILE_STORE_TYPE
from features.repo import FEATURE_SERVICE, OFFLINE_DIR, STATE_VIEW, definitions
from features.state import CREATED_TIMESTAMP, ENTITY_KEY, EVENT_TIMESTAMP, STATE_FEATURE, empty_states
from features.transform import AS_OF, FEATURE_NAMES, window_features
from infra.spark import session_conf

if TYPE_CHECKING:
    from feast import FeatureStore

    from features.sqlite_online import SqliteStateTable

STATE_SCHEMA = pa.schema([
    (ENTITY_KEY, pa.string()),
    (EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC")),
    (CREATED_TIMESTAMP, pa.timestamp("us", tz="UTC")),
    (STATE_FEATURE, pa.binary()),
])
EMPTY_FILE = "0000-empty.parquet"  # keeps the source readable until the first write
SPARK_APP = "activity-features"
SPARK_STORE_TYPE = "features.spark_offline_store.AsOfSparkOfflineStore"  # not imported here: it imports pyspark
QUOTED_REGEX_COLUMNS = "spark.sql.parser.quotedRegexColumnNames"  # Feast's Spark store turns it on, session-wide
_STORE_SETTINGS: weakref.WeakKeyDictionary[object, Settings] = weakref.WeakKeyDictionary()  # for the SparkSession

logging.getLogger("feast").setLevel(logging.WARNING)


def _ignore_feast_experimental_warnings() -> None:
    """Feast warns on every use of the on-demand view and the Spark store; again after Feast's Spark module
    is imported, which puts ``simplefilter("once", RuntimeWarning)`` in front of every filter."""
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
    warnings.filterwarnings("ignore", message="The spark (data source API|offline store) is an experimental feature")


_ignore_feast_experimental_warnings()


def repo_dir(settings: Settings) -> Path:
    return settings.home / "feature_store"


def feature_store_yaml(settings: Settings) -> str:
    fs = settings.feature_store
    if fs.online_store == "redis":
        # skip_dedup: Feast's redis store otherwise drops a write whose event time is not newer than the stored
        # one, but a state rewritten with late events (or by a rebuild) keeps its newest event's time; the
        # stream's latest state must replace the stored one, as features.sqlite_online does for SQLite.
        online = (f"online_store:\n  type: redis\n  connection_string: {json.dumps(fs.redis_connection_string)}\n"
                  "  skip_dedup: true\n")
    else:
        online = "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
    return (
        f"project: {fs.project}\n"
        "registry: data/registry.db\n"
        "provider: local\n"
        f"{online}"
        f"{_offline_store_yaml(settings)}"
        "entity_key_serialization_version: 3\n"
    )


def _offline_store_yaml(settings: Settings) -> str:
    """The platform's file store (``features.offline_store``), or its Spark store
    (``features.spark_offline_store``) configured like the platform's sessions (``infra.spark.session_conf``).

    ``historical_features`` starts the platform's own session before Feast asks for one; the
    ``spark_conf`` here configures the session Feast starts when it runs without that (the
    ``feast`` CLI, another caller of ``get_historical_features``). JSON strings are YAML.
    """
    fs = settings.feature_store
    if fs.offline_store == "file":
        return (f"offline_store:\n  type: {FILE_STORE_TYPE}\n  batch_rows: {fs.retrieval_batch_rows}\n"
                f"  memory_limit_mb: {fs.retrieval_memory_mb}\n")
    conf = {"spark.app.name": SPARK_APP, **session_conf(settings)}
    lines = "".join(f"    {json.dumps(key)}: {json.dumps(value)}\n" for key, value in conf.items())
    return (f"offline_store:\n  type: {SPARK_STORE_TYPE}\n  batch_rows: {fs.retrieval_batch_rows}\n"
            f"  spark_conf:\n{lines}")


def open_feature_store(settings: Settings) -> FeatureStore:  # feast imported lazily
    """The Feast store under the data directory, created and applied if needed."""
    from feast import FeatureStore

    root = repo_dir(settings)
    offline = root / OFFLINE_DIR
    offline.mkdir(parents=True, exist_ok=True)
    config = root / "feature_store.yaml"
    wanted = feature_store_yaml(settings)
    if not config.is_file() or config.read_text() != wanted:
        config.write_text(wanted)
    if not any(offline.glob("*.parquet")):
        pq.write_table(STATE_SCHEMA.empty_table(), offline / EMPTY_FILE)
    store = FeatureStore(repo_path=str(root))
    _ignore_feast_experimental_warnings()
    store.apply(definitions(settings.feature_store.offline_store, offline))
    _STORE_SETTINGS[store] = settings
    return store


@dataclass
class FeatureWriter:
    """Writes state rows (``ENTITY_KEY, EVENT_TIMESTAMP, CREATED_TIMESTAMP, STATE_FEATURE``)."""

    store: FeatureStore
    offline_dir: Path
    _sqlite: SqliteStateTable | None = field(init=False, repr=False)  # None: not plain SQLite, Feast's write

    def __post_init__(self) -> None:
        from features.sqlite_online import SqliteStateTable

        self._sqlite = SqliteStateTable.for_store(self.store)

    @classmethod
    def open(cls, settings: Settings) -> FeatureWriter:
        return cls(open_feature_store(settings), repo_dir(settings) / OFFLINE_DIR)

    def write(self, states: pd.DataFrame, batch_id: int, offline: pd.DataFrame | None = None) -> None:
        """One micro-batch: ``offline`` rows (default: ``states``) to a file named by the batch, so a
        re-run replaces it, and ``states`` (the customers' latest) online."""
        if states.empty:
            return
        offline = states if offline is None else offline
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="activity-offline") as pool:
            written = pool.submit(self.write_offline, offline, f"stream-{batch_id:012d}")  # compresses off the GIL
            self.write_online(states)
            written.result()

    def write_offline(self, states: pd.DataFrame, name: str) -> Path:
        target = self.offline_dir / f"{name}.parquet"
        temporary = target.with_name(f".{target.name}.tmp")  # hidden: Spark, pyarrow and dask skip it while written
        table = pa.Table.from_pandas(states[list(STATE_SCHEMA.names)], schema=STATE_SCHEMA, preserve_index=False)
        pq.write_table(table, temporary, compression="zstd", row_group_size=50_000)
        temporary.replace(target)
        (self.offline_dir / EMPTY_FILE).unlink(missing_ok=True)  # an empty partition upsets dask's sort
        return target

    def write_online(self, states: pd.DataFrame) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        event_times = pd.DatetimeIndex(pd.to_datetime(states[EVENT_TIMESTAMP], utc=True))
        created = datetime.now(UTC)
        if self._sqlite is not None:
            self._sqlite.upsert(states[ENTITY_KEY].tolist(), states[STATE_FEATURE].tolist(), event_times, created)
            return
        rows: list[tuple[EntityKey, dict[str, Value], datetime, datetime | None]] = [
            (EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=customer)]),
             {STATE_FEATURE: Value(bytes_val=state)}, event_time, created)
            for customer, state, event_time in zip(states[ENTITY_KEY], states[STATE_FEATURE],
                                                    event_times.to_pydatetime(), strict=True)]
        provider = self.store._get_provider()  # Feast's own write path, minus DataFrame conversion
        provider.online_write_batch(self.store.config, self.store.get_feature_view(STATE_VIEW), rows, None)

    def remove_offline(self, prefix: str, keep: str | None = None) -> None:
        for path in self.offline_dir.glob(f"{prefix}*.parquet"):
            if path.stem != keep:
                path.unlink()


def online_features(store, customer_ids: Sequence[str], as_of_s: Sequence[int]) -> pd.DataFrame:
    """Features for serving: the online state through the same transform."""
    rows = [{ENTITY_KEY: cid, AS_OF: int(t)} for cid, t in zip(customer_ids, as_of_s, strict=True)]
    result = store.get_online_features(features=store.get_feature_service(FEATURE_SERVICE),
                                       entity_rows=rows).to_dict()
    return pd.DataFrame({ENTITY_KEY: result[ENTITY_KEY], **{name: result[name] for name in FEATURE_NAMES}})


def historical_features(store, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time correct features for (customer_id, event_timestamp) rows, as of each row's time.

    One row per distinct (customer_id, event_timestamp), in the order ``entities`` first has them:
    its columns (the time as UTC), ``as_of_s``, then ``FEATURE_NAMES``. Either offline store gives
    the same frame; both join in time linear in their rows (``features.offline_store``,
    ``features.spark_offline_store``).
    """
    frame = entities.copy()
    frame[EVENT_TIMESTAMP] = pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True)
    frame = frame.drop_duplicates([ENTITY_KEY, EVENT_TIMESTAMP], ignore_index=True)  # the file store merges them
    epoch = pd.Timestamp(0, tz="UTC")
    frame[AS_OF] = ((frame[EVENT_TIMESTAMP] - epoch) // pd.Timedelta(seconds=1)).astype("int64")
    query = frame.assign(**{EVENT_TIMESTAMP: frame[EVENT_TIMESTAMP].dt.floor("us")})  # Spark's and the states'
    with _offline_engine(store):
        job = store.get_historical_features(entity_df=query, features=store.get_feature_service(FEATURE_SERVICE))
        result = job.to_df()
    return _aligned(frame, result)


def _aligned(frame: pd.DataFrame, result: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the features ``result`` has for each of its rows, matched by (customer, time).

    The platform's stores answer every row in the entity frame's order; the match by key keeps the
    frame right for any store that does not (another order, times without a zone or cut to the
    microsecond, a row dropped because its customer has no state before it). A row without an
    answer gets the transform's cold start, as a never-seen customer does through the on-demand view.
    """
    found = _row_keys(result[ENTITY_KEY], result[EVENT_TIMESTAMP])
    first = ~found.duplicated()
    values = result.loc[first, list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    at = found[first].get_indexer(_row_keys(frame[ENTITY_KEY], frame[EVENT_TIMESTAMP]))
    features = np.empty((len(frame), len(FEATURE_NAMES)))
    hit = at >= 0
    features[hit] = values[at[hit]]
    if not hit.all():
        cold = window_features(empty_states(int((~hit).sum())), frame.loc[~hit, AS_OF].to_numpy())
        features[~hit] = np.column_stack([cold[name] for name in FEATURE_NAMES])
    return pd.concat([frame, pd.DataFrame(features, columns=list(FEATURE_NAMES))], axis=1)


def _row_keys(customers: pd.Series, times: pd.Series) -> pd.MultiIndex:
    """(customer, UTC microseconds): naive times are UTC, and any resolution compares equal."""
    microseconds = pd.to_datetime(times, utc=True).dt.floor("us").dt.as_unit("us").astype("int64")
    return pd.MultiIndex.from_arrays([customers.to_numpy(), microseconds.to_numpy()])


@contextmanager
def _offline_engine(store) -> Iterator[None]:
    """Around one retrieval: what the store's offline engine needs.

    file: nothing. spark: the platform's SparkSession, started here when
    none runs (``infra.spark.spark_session``: its jars, local dirs, loopback binding), so Feast's
    ``get_spark_session_or_start_new_with_repoconfig`` reuses it rather than starting its own;
    afterwards the session gets back the column-name parsing Feast switches for everyone using it.
    """
    if getattr(store.config.offline_store, "type", None) not in (SPARK_STORE_TYPE, "spark"):
        yield
        return
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    settings = _STORE_SETTINGS.get(store)
    if session is None and settings is not None:
        from infra.spark import spark_session

        session = spark_session(settings, SPARK_APP)
    before = (session.conf.get(QUOTED_REGEX_COLUMNS, "false") if session is not None else None) or "false"
    try:
        yield
    finally:
        session = SparkSession.getActiveSession() or session
        if session is not None:
            session.conf.set(QUOTED_REGEX_COLUMNS, before)


def online_states(store, customer_ids: Sequence[str]) -> list[bytes | None]:
    """The stored state values (``features.state``) of customers, as the online store has them."""
    result = store.get_online_features(features=[f"{STATE_VIEW}:{STATE_FEATURE}"],
                                       entity_rows=[{ENTITY_KEY: cid} for cid in customer_ids]).to_dict()
    return result[STATE_FEATURE]


def latest_offline_states(offline_dir: Path) -> pd.DataFrame:
    """The newest offline state row per customer (by event time, then write time)."""
    frame = pd.read_parquet(offline_dir)
    frame = frame.sort_values([ENTITY_KEY, EVENT_TIMESTAMP, CREATED_TIMESTAMP], kind="stable")
    return frame.groupby(ENTITY_KEY, sort=True).tail(1).set_index(ENTITY_KEY)
