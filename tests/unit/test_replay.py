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
    assert isinstance(bad, InvalidEvent) and bad.code == ErrorCode.INVALID_TIMESTAMP
    assert "'not a date'" in bad.message  # the refusal quotes the time as the file wrote it
    assert json.loads(values[0])["event_time"] == "not a date"


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


def _times(tmp_path: Path, lines: str, **defaults: object) -> list[str | None]:
    path = tmp_path / "ledger.txt"
    path.write_text(lines)
    replay = ReplayDefaults(**defaults)  # type: ignore[arg-type]
    mapping = ColumnMapping(customer_id="1" if not replay.header else "customer", event_time="2" if not replay.header
                            else "time", amount="3" if not replay.header else "amount")
    table = read_transactions_file(path, mapping, replay)
    return [None if t is None else t.isoformat() for t in table["event_time"].to_pylist()]


def test_a_headerless_whitespace_ledger_of_yyyymmdd_dates_from_the_1990s(tmp_path: Path) -> None:
    # The shape of the classic CD retail panel: padded ids, date-only integers, runs of spaces.
    path = tmp_path / "panel (1997).txt"
    path.write_text("00001 19970101  1  11.77\n00002 19970112  2  89.00\n00001 19970302  1   0.00\n"
                    "00003 19971301  1   5.00\n")
    mapping = ColumnMapping(customer_id="1", event_time="2", amount="4")
    table = read_transactions_file(path, mapping, ReplayDefaults(header=False))
    rows = table.to_pylist()
    assert [row["customer_id"] for row in rows] == ["00003", "00001", "00002", "00001"]  # ids keep their zeros
    assert rows[0]["event_time"] is None  # month 13: sent as null, dead-lettered with its reason
    assert [row["event_time"].isoformat() for row in rows[1:]] == [
        "1997-01-01T00:00:00+00:00", "1997-01-12T00:00:00+00:00", "1997-03-02T00:00:00+00:00"]
    results = [validate_bytes(value) for value in encode_replayed(table)]
    assert isinstance(results[0], InvalidEvent)
    assert [r.customer_id for r in results[1:3] if isinstance(r, Transaction)] == ["00001", "00002"]
    assert all(ok.transaction_id.startswith("panel__1997_-") for ok in results[1:3] if isinstance(ok, Transaction))


@pytest.mark.parametrize(("written", "expected"), [
    ("1997-01-31", "1997-01-31T00:00:00+00:00"),
    ("1997-01-31 10:30:00", "1997-01-31T10:30:00+00:00"),
    ("1997-01-31T10:30:00+01:00", "1997-01-31T09:30:00+00:00"),
    ("01/31/1997", "1997-01-31T00:00:00+00:00"),
    ("1997/01/31", "1997-01-31T00:00:00+00:00"),
    ("Jan 31 1997", "1997-01-31T00:00:00+00:00"),
    ("19970131", "1997-01-31T00:00:00+00:00"),
    ("yesterday-ish", None),
])
def test_common_date_spellings_are_read(tmp_path: Path, written: str, expected: str | None) -> None:
    assert _times(tmp_path, f"customer;time;amount\nc1;{written};1.5\n") == [expected]


def test_a_time_format_and_a_time_zone_are_applied(tmp_path: Path) -> None:
    lines = "customer,time,amount\nc1,31.01.1997 23:30,1.5\n"
    assert _times(tmp_path, lines, time_format="%d.%m.%Y %H:%M", timezone="Europe/Berlin") == [
        "1997-01-31T22:30:00+00:00"]


def test_a_missing_customer_is_a_missing_field_not_the_text_nan(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text("customer,time,amount\n,2026-01-01,1.0\nc2,2026-01-02,2.0\n")
    table = read_transactions_file(path, ColumnMapping("customer", "time", "amount"), ReplayDefaults())
    assert table["customer_id"].to_pylist() == [None, "c2"]
    first = validate_bytes(encode_replayed(table)[0])
    assert isinstance(first, InvalidEvent) and first.code == ErrorCode.MISSING_FIELD
    assert "customer_id" in first.message


def test_negative_amounts_are_replayed_as_refunds_and_zero_as_a_purchase(tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text("customer,time,amount\nc1,2026-01-01,25.0\nc1,2026-01-02,-25.0\nc2,2026-01-03,0\n")
    table = read_transactions_file(path, ColumnMapping("customer", "time", "amount"), ReplayDefaults())
    results = [validate_bytes(value) for value in encode_replayed(table)]
    assert [(r.kind, r.amount) for r in results if isinstance(r, Transaction)] == [
        ("purchase", 25.0), ("refund", -25.0), ("purchase", 0.0)]


@pytest.mark.parametrize(("written", "expected"), [
    ("12.5", 12.5),
    ("$1,234.50", 1234.5),
    ("EUR 12.50", 12.5),
    ("12.50 USD", 12.5),
    ("1.234,50", 1234.5),
    ("12,50", 12.5),
    ("1,234,567", 1234567.0),
    ("(12.50)", -12.5),
    ("12.50-", -12.5),
    ("-€3.00", -3.0),
    ("£ 0", 0.0),
    ("twelve", None),
    ("1.2.3", None),
])
def test_amounts_are_read_as_ledgers_write_them(written: str, expected: float | None) -> None:
    from streaming.publish import amounts

    value = amounts(pd.Series([written], dtype=object)).iloc[0]
    assert (pd.isna(value) and expected is None) or value == expected


def test_an_amount_can_be_the_product_of_quantity_and_price(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("customer,time,qty,price\nc1,2026-01-01,3,2.50\nc1,2026-01-02,-1,2.50\n")
    table = read_transactions_file(path, ColumnMapping("customer", "time", "qty*price"), ReplayDefaults())
    assert table["amount"].to_pylist() == [7.5, -2.5]
    with pytest.raises(ReplayError, match="'cost' \\(for amount\\)"):
        read_transactions_file(path, ColumnMapping("customer", "time", "qty*cost"), ReplayDefaults())


def test_lines_sharing_a_transaction_id_are_one_transaction(tmp_path: Path) -> None:
    # An invoice ledger: one row per item line; ids repeat within an invoice.
    path = tmp_path / "invoices.csv"
    path.write_text("invoice,customer,time,qty,price\n"
                    "536365,17850,2010-12-01 08:26,6,2.55\n"
                    "536365,17850,2010-12-01 08:26,6,3.39\n"
                    "536366,17850,2010-12-01 08:28,6,1.85\n"
                    "C536379,14527,2010-12-01 09:41,-1,27.50\n"
                    "536367,13047,2010-12-01 08:34,x,4.25\n"
                    "536367,13047,2010-12-01 08:34,2,1.00\n"
                    "536368,,2010-12-01 08:35,1,1.00\n"
                    "536368,,2010-12-01 08:35,1,1.00\n"
                    "536369,12583,2010-12-01 08:45,1,1.00\n"
                    "536369,99999,2010-12-01 08:45,1,2.00\n")
    mapping = ColumnMapping("customer", "time", "qty*price", transaction_id="invoice")
    table = read_transactions_file(path, mapping, ReplayDefaults())
    rows = sorted((row["transaction_id"], row["customer_id"] or "",
                   None if row["amount"] is None else round(row["amount"], 2)) for row in table.to_pylist())
    assert rows == [
        ("536365", "17850", 35.64),  # two lines (6 x 2.55 + 6 x 3.39), one purchase
        ("536366", "17850", 11.1),
        ("536367", "13047", None),  # a line's quantity is unreadable: the amount is unknown, dead-lettered
        ("536368", "", 2.0),  # no customer: one transaction, dead-lettered once
        ("536369", "12583", 1.0), ("536369", "99999", 2.0),  # one id, two customers: the stream keeps the first
        ("C536379", "14527", -27.5),  # a cancellation: a refund
    ]
    results = [validate_bytes(value) for value in encode_replayed(table)]
    assert sum(isinstance(result, Transaction) for result in results) == 5 and len(results) == 7


def test_the_first_time_sets_the_spelling_of_the_rest(tmp_path: Path) -> None:
    # Day first, as the first time shows (31 > 12): the second is the 1st of February, not the 2nd of January.
    lines = "customer,time,amount\nc1,31/01/1997 10:30,1.5\nc1,01/02/1997 08:00,2.0\n"
    assert sorted(_times(tmp_path, lines)) == ["1997-01-31T10:30:00+00:00", "1997-02-01T08:00:00+00:00"]


def test_times_in_mixed_spellings_are_each_read(tmp_path: Path) -> None:
    lines = ("customer,time,amount\nc1,01/31/1997,1\nc1,Feb 2 1997,1\nc1,yesterday-ish,1\nc1,01/31/1997,1\n"
             "c1,1997-03-01,1\n")
    assert _times(tmp_path, lines) == [None, "1997-01-31T00:00:00+00:00", "1997-01-31T00:00:00+00:00",
                                       "1997-02-02T00:00:00+00:00", "1997-03-01T00:00:00+00:00"]


def test_an_excel_workbook_is_read_sheet_after_sheet(tmp_path: Path) -> None:
    """A ledger shipped as .xlsx with a sheet per year (as public retail exports come): cells keep
    their meaning (times, numbers, a missing customer, an id with leading zeros)."""
    from datetime import datetime

    path = tmp_path / "ledger.xlsx"
    columns = ["Invoice", "Customer ID", "InvoiceDate", "Quantity", "Price"]
    first = pd.DataFrame([["536365", 17850, datetime(2010, 12, 1, 8, 26), 6, 2.55],
                          ["536365", 17850, datetime(2010, 12, 1, 8, 26), 6, 3.39],
                          ["536366", None, datetime(2010, 12, 1, 8, 28), 1, 1.0]], columns=columns)
    second = pd.DataFrame([["C536379", "00042", datetime(2011, 1, 4, 9, 41), -1, 27.5]], columns=columns)
    with pd.ExcelWriter(path, engine="openpyxl") as workbook:
        first.to_excel(workbook, sheet_name="Year 2010", index=False)
        second.to_excel(workbook, sheet_name="Year 2011", index=False)
    mapping = ColumnMapping("Customer ID", "InvoiceDate", "Quantity*Price", transaction_id="Invoice")
    rows = sorted((row["transaction_id"], row["customer_id"], row["event_time"].isoformat(), round(row["amount"], 2))
                  for row in read_transactions_file(path, mapping, ReplayDefaults()).to_pylist())
    assert rows == [("536365", "17850", "2010-12-01T08:26:00+00:00", 35.64),
                    ("536366", None, "2010-12-01T08:28:00+00:00", 1.0),
                    ("C536379", "00042", "2011-01-04T09:41:00+00:00", -27.5)]


def test_a_workbook_whose_sheets_differ_is_refused_naming_the_sheet(tmp_path: Path) -> None:
    path = tmp_path / "two ledgers.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as workbook:
        pd.DataFrame({"customer": ["c1"], "time": ["2026-01-01"], "amount": [1.0]}).to_excel(
            workbook, sheet_name="sales", index=False)
        pd.DataFrame({"sku": ["x"], "stock": [3]}).to_excel(workbook, sheet_name="stock", index=False)
    with pytest.raises(ReplayError, match="sheet 'stock'"):
        read_transactions_file(path, ColumnMapping("customer", "time", "amount"), ReplayDefaults())
    (tmp_path / "not a workbook.xlsx").write_text("customer,time,amount\n")
    with pytest.raises(ReplayError, match="not a readable .xlsx workbook"):
        read_transactions_file(tmp_path / "not a workbook.xlsx", ColumnMapping("customer", "time", "amount"),
                               ReplayDefaults())


def test_an_empty_time_cell_is_a_missing_field(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text("customer,time,amount\nc1,,1.0\nc2,2026-01-02,2.0\n")
    table = read_transactions_file(path, ColumnMapping("customer", "time", "amount"), ReplayDefaults())
    first = validate_bytes(encode_replayed(table)[0])
    assert isinstance(first, InvalidEvent) and first.code == ErrorCode.MISSING_FIELD and "event_time" in first.message
