"""Feast's SQLite online store, read and written directly: the one module that knows its table.

Feast's ``SqliteOnlineStore`` keeps one table per feature view (``_table_id``) with the columns
``entity_key, feature_name, value, value_text, event_ts, created_ts``: the entity key serialized by
``serialize_entity_key``, the value a ``ValueProto``, the times through the datetime adapter its module
registers. Its own write converts row by row and its read goes through the registry and protos per
call; the stream writes millions of states and the scorer answers in a millisecond, so both use this
table directly, with exactly the rows Feast itself writes and reads (the integration tests compare
them with Feast's ``online_write_batch`` and ``get_online_features``).

``SqliteStateTable.for_store`` answers ``None`` for any other online store (redis, or SQLite with
vector search): callers then go through Feast's own API.

Reads: each thread keeps one read-only connection; with the database in WAL mode (switched on once,
a persistent property of the file) readers never wait for the stream's writes, nor the stream for
readers. A read is bounded by a deadline (SQLite's progress handler) and a lock wait by the
connection's timeout; every failure is ``OnlineStoreUnavailable``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.utils import to_naive_utc

from activity_settings import ActivityError
from features.repo import STATE_VIEW
from features.state import ENTITY_KEY, STATE_FEATURE

log = logging.getLogger(__name__)

CHUNK = 500  # keys per SELECT: well under SQLite's bound-parameter limit
KEY_CACHE_MAX = 4_000_000  # serialized entity keys a writer keeps (about 60 bytes each)
StoredState = tuple[bytes | None, datetime | None]  # (state bytes, event time of its newest event), None: never seen


class OnlineStoreUnavailable(ActivityError, RuntimeError):
    """The online store failed or did not answer within the budget: the caller should degrade, not wait."""


class SqliteStateTable:
    """The state view's table in Feast's SQLite online store: upserts for the stream, bounded reads for serving."""

    def __init__(self, store: Any) -> None:
        """``store``: an open ``feast.FeatureStore`` whose online store is plain SQLite (see ``for_store``)."""
        config = store.config
        self._store = store
        self.db_path = _db_path(config)
        self.table = _table_id(config.project, store.get_feature_view(STATE_VIEW),
                               config.registry.enable_online_feature_view_versioning)
        self._key_version = int(config.entity_key_serialization_version)
        self._query_head = f'SELECT entity_key, value, event_ts FROM "{self.table.replace(chr(34), chr(34) * 2)}" '
        self._key_cache: dict[str, bytes] = {}
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []  # every thread's, so close() can close them
        self._connections_lock = threading.Lock()

    @classmethod
    def for_store(cls, store: Any) -> SqliteStateTable | None:
        """The table of ``store``'s online store when it is plain SQLite, else ``None`` (use Feast's API)."""
        online = store._get_provider().online_store
        if type(online) is not SqliteOnlineStore or getattr(store.config.online_store, "vector_enabled", False):
            return None
        return cls(store)

    # -- keys --------------------------------------------------------------------------------------------------

    def keys(self, customers: Sequence[str], cache: bool = False) -> list[bytes]:
        """Feast's serialized entity key of each customer; ``cache`` keeps them (a writer sees the same ones)."""
        version = self._key_version
        if not cache:
            return [serialize_entity_key(_entity_key(customer), entity_key_serialization_version=version)
                    for customer in customers]
        known = self._key_cache
        if len(known) > KEY_CACHE_MAX:
            known.clear()
        for customer in customers:
            if customer not in known:
                known[customer] = serialize_entity_key(_entity_key(customer), entity_key_serialization_version=version)
        return [known[customer] for customer in customers]

    # -- write -------------------------------------------------------------------------------------------------

    def upsert(self, customers: Sequence[str], states: Sequence[bytes], event_times: pd.DatetimeIndex,
               created: datetime) -> None:
        """``SqliteOnlineStore.online_write_batch`` as one ``executemany``: the same table, rows and
        serialization (its datetime adapter turns the naive UTC times into the stored epoch seconds),
        without a Python round trip per row. A customer's row is replaced whatever its stored event time."""
        config = self._store.config
        connection = self._store._get_provider().online_store._get_conn(config)  # Feast's: its table, its file
        keys = self.keys(customers, cache=True)
        values = [Value(bytes_val=state).SerializeToString() for state in states]
        created_naive = to_naive_utc(created)
        naive_times = event_times.tz_convert(None).to_pydatetime()
        rows = [(key, STATE_FEATURE, value, None, event_time, created_naive)
                for key, value, event_time in zip(keys, values, naive_times, strict=True)]
        with connection:
            connection.executemany(
                f'INSERT INTO "{self.table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
                "created_ts = excluded.created_ts",
                rows,
            )

    # -- read --------------------------------------------------------------------------------------------------

    def read(self, customers: Sequence[str], budget_s: float, deadline: float | None = None) -> list[StoredState]:
        """The stored state and its event time per customer (``(None, None)`` when never seen).

        ``budget_s`` bounds a lock wait, ``deadline`` (``time.perf_counter()``) the whole read; past
        either, or on any SQLite error, ``OnlineStoreUnavailable``.
        """
        keys = self.keys(customers)
        found: dict[bytes, StoredState] = {}
        try:
            connection = self._connection(budget_s)
            if deadline is not None:
                connection.set_progress_handler(lambda: time.perf_counter() > deadline, 1_000)
            for start in range(0, len(keys), CHUNK):
                chunk = list(dict.fromkeys(keys[start:start + CHUNK]))  # a customer asked twice is read once
                query = f"{self._query_head}WHERE entity_key IN ({','.join('?' * len(chunk))}) AND feature_name = ?"
                for key, blob, event_ts in connection.execute(query, [*chunk, STATE_FEATURE]):
                    state = Value.FromString(blob).bytes_val if blob is not None else None
                    found[key] = (state, _utc(event_ts))
        except sqlite3.Error as exc:  # missing table, corrupt file, lock timeout: all "unavailable" to a request
            self._drop_connection()
            raise OnlineStoreUnavailable(f"the online store {self.db_path} failed: {exc}") from exc
        return [found.get(key, (None, None)) for key in keys]

    def ensure_wal(self) -> None:
        """Switch the database to WAL (persistent) so readers and the stream's writer never block each other."""
        if not self.db_path.is_file():
            log.warning("online store %s does not exist yet: reads fail until features are written", self.db_path)
            return
        try:
            with sqlite3.connect(self.db_path, timeout=5.0) as connection:
                mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            connection.close()
            if str(mode).lower() != "wal":
                log.warning("online store %s stays in %s journal mode: reads and writes take turns",
                            self.db_path, mode)
        except sqlite3.Error as exc:
            log.warning("could not switch online store %s to WAL (%s): reads and writes take turns",
                        self.db_path, exc)

    def close(self) -> None:
        """Close every thread's read connection (idempotent)."""
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    def _connection(self, budget_s: float) -> sqlite3.Connection:
        """This thread's read-only connection (opened on first use, reopened after an error).

        The file is stat'ed on every read (~1 us): an open connection keeps reading a deleted or
        replaced file (a re-created store) without any error, so a new inode means reconnect.
        """
        try:
            inode = os.stat(self.db_path).st_ino
        except FileNotFoundError:
            self._drop_connection()
            raise OnlineStoreUnavailable(f"the online store {self.db_path} does not exist: "
                                         "materialize or stream features first") from None
        connection = getattr(self._local, "connection", None)
        if connection is not None and getattr(self._local, "inode", None) != inode:
            self._drop_connection()
            connection = None
        if connection is None:
            uri = f"file:{quote(str(self.db_path))}?mode=ro"
            # a lock wait longer than the request's budget is useless
            connection = sqlite3.connect(uri, uri=True, timeout=max(budget_s, 0.001), check_same_thread=False)
            self._local.connection, self._local.inode = connection, inode
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._connections_lock:
                if connection in self._connections:
                    self._connections.remove(connection)
            connection.close()


def _entity_key(customer: str) -> EntityKey:
    return EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=customer)])


def _db_path(config: Any) -> Path:
    """Where Feast's SQLite store keeps its file (``SqliteOnlineStore._get_db_path``'s rule)."""
    path = Path(config.online_store.path)
    if config.repo_path and not path.is_absolute():
        path = Path(config.repo_path) / path
    return path.resolve()


def _utc(moment: Any) -> datetime | None:
    """SQLite's ``event_ts`` as an aware UTC datetime, decoded the way Feast's ``online_read`` does.

    Feast's sqlite module registers an adapter that stores a datetime as ``int(naive_utc.timestamp())``
    (whole seconds, the naive value taken as local time) and reads it back with ``fromtimestamp`` (local
    again) then labels it UTC: the two local-time steps cancel, so the same steps give Feast's value.
    """
    if moment is None:
        return None
    if isinstance(moment, int | float):
        return datetime.fromtimestamp(int(moment)).replace(tzinfo=UTC)  # Feast's round trip
    if isinstance(moment, bytes):
        moment = moment.decode()
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
