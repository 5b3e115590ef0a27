"""Replay of real data: column mapping, event-time order, and nothing silently dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from streaming.publish import ColumnMapping, ReplayDefaults, ReplayError, encode_replayed, read_transactions_file
from streaming.schema import ErrorCode, InvalidEvent, Transaction, validate_bytes


@pytest.fixture
def bank_csv(tmp_path: Path) -> Path:
    path = tmp_path / "bank export.csv"
    pd.DataFrame({
        "client": ["A1", "B2", "A1", "C3"],
        "booked_at": ["2026-02-03 10:00:00", "2026-02-01 09:00:00", "2026-02-02 08:00:00", "not a date"],
        "value": [12.5, 7.0, 99.99, 5.0],
        "kind": ["grocery", "fuel", "travel", "grocery"],
    }).to_csv(path, index=False)
    return path


def test_rows_are_mapped_and_sorted_by_event_time(bank_csv: Path) -> None:
    mapping = ColumnMapping(customer_id="client", event_time="booked_at", amount="value",
                            merchant_category="kind")
    table = read_transactions_file(bank_csv, mapping, ReplayDefaults(currency="USD"))
    rows = table.to_pylist()
    assert [row["customer_id"] for row in rows] == ["C3", "B2", "A1", "A1"]  # bad time first
    values = encode_replayed(table)
    results = [validate_bytes(value) for value in values]
    good = [result for result in results if isinstance(result, Transaction)]
    assert [t.customer_id for t in good] == ["B2", "A1", "A1"]
    assert {t.currency for t in good} == {"USD"}
    assert good[0].merchant_category == "fuel"
    # The row with an unparseable time is still sent, so the stream dead-letters it with a reason.
    bad = results[0]
    assert isinstance(bad, InvalidEvent) and bad.code == ErrorCode.WRONG_TYPE
    assert json.loads(values[0])["event_time"] is None


def test_replayed_ids_are_stable_across_runs(bank_csv: Path) -> None:
    mapping = ColumnMapping(customer_id="client", event_time="booked_at", amount="value")
    first = read_transactions_file(bank_csv, mapping, ReplayDefaults())["transaction_id"].to_pylist()
    second = read_transactions_file(bank_csv, mapping, ReplayDefaults())["transaction_id"].to_pylist()
    assert first == second and len(set(first)) == 4


def test_unknown_column_is_named(bank_csv: Path) -> None:
    mapping = ColumnMapping(customer_id="customer", event_time="booked_at", amount="value")
    with pytest.raises(ReplayError, match="'customer'"):
        read_transactions_file(bank_csv, mapping, ReplayDefaults())


def test_parquet_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    pd.DataFrame({"customer_id": ["x"], "event_time": pd.to_datetime(["2026-01-01T00:00:00Z"]),
                  "amount": [1.0]}).to_parquet(path)
    table = read_transactions_file(path, ColumnMapping("customer_id", "event_time", "amount"), ReplayDefaults())
    assert isinstance(validate_bytes(encode_replayed(table)[0]), Transaction)
