"""Feast's SQLite online store is known in one module: its table, its private helpers, its connection."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("activity", "bench", "features", "infra", "model_contract", "monitoring", "serving", "streaming",
           "training")
# what only Feast's SQLite store defines: the module, its table naming, its private connection, the row columns
SQLITE_INTERNALS = re.compile(r"online_stores\.sqlite|SqliteOnlineStore|_table_id|_get_conn\b|"
                              r"entity_key, feature_name|event_ts")


def test_feasts_sqlite_internals_are_named_in_one_module() -> None:
    naming = sorted(str(path.relative_to(ROOT)) for package in PRODUCT for path in (ROOT / package).rglob("*.py")
                    if SQLITE_INTERNALS.search(path.read_text()))
    assert naming == ["features/sqlite_online.py"]
