"""The transaction contract: validation with typed codes, the Spark schema and the docs."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streaming.schema import (
    FIELD_NAMES,
    MAX_PAYLOAD_BYTES,
    ErrorCode,
    InvalidEvent,
    Transaction,
    example_event,
    render_docs,
    spark_schema_ddl,
    validate_bytes,
    validate_record,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def event(**changes: object) -> dict[str, object]:
    document = example_event()
    document.update(changes)
    return document


def encoded(document: object) -> bytes:
    return json.dumps(document).encode()


def test_example_event_is_valid_and_normalized_to_utc() -> None:
    result = validate_bytes(encoded(event(event_time="2026-03-01T14:30:00+02:00")), now=NOW)
    assert isinstance(result, Transaction)
    assert result.event_time == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert result.amount == 42.5


def test_valid_event_round_trips_through_json() -> None:
    result = validate_bytes(encoded(example_event()), now=NOW)
    assert isinstance(result, Transaction)
    assert result.to_json() == example_event()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"x" * (MAX_PAYLOAD_BYTES + 1), ErrorCode.PAYLOAD_TOO_LARGE),
        (b'{"customer_id": "\xff\xfe"}', ErrorCode.INVALID_ENCODING),
        (b'{"schema_version": 1, ', ErrorCode.INVALID_JSON),
        (b"", ErrorCode.INVALID_JSON),
        (b"[1, 2]", ErrorCode.NOT_AN_OBJECT),
        (b'"just a string"', ErrorCode.NOT_AN_OBJECT),
        (None, ErrorCode.NOT_AN_OBJECT),
    ],
)
def test_undecodable_payloads_are_rejected_with_a_code(raw: bytes | None, code: ErrorCode) -> None:
    result = validate_bytes(raw, now=NOW)
    assert isinstance(result, InvalidEvent)
    assert result.code == code
    assert result.message


def _without(name: str) -> dict[str, object]:
    document = example_event()
    del document[name]
    return document


@pytest.mark.parametrize(
    ("document", "code"),
    [
        (_without("amount"), ErrorCode.MISSING_FIELD),
        (_without("event_time"), ErrorCode.MISSING_FIELD),
        (event(coupon="x"), ErrorCode.UNKNOWN_FIELD),
        (event(amount="42.5"), ErrorCode.WRONG_TYPE),
        (event(amount=True), ErrorCode.WRONG_TYPE),
        (event(customer_id=123), ErrorCode.WRONG_TYPE),
        (event(customer_id=None), ErrorCode.WRONG_TYPE),
        (event(schema_version="1"), ErrorCode.WRONG_TYPE),
        (event(schema_version=1.0), ErrorCode.WRONG_TYPE),
        (event(schema_version=3), ErrorCode.UNSUPPORTED_VERSION),
        (event(customer_id=""), ErrorCode.INVALID_ID),
        (event(transaction_id="a b"), ErrorCode.INVALID_ID),
        (event(merchant_id="m" * 65), ErrorCode.INVALID_ID),
        (event(amount=math.nan), ErrorCode.NON_FINITE_AMOUNT),
        (event(amount=math.inf), ErrorCode.NON_FINITE_AMOUNT),
        (event(amount=-5), ErrorCode.AMOUNT_SIGN),
        ({k: v for k, v in event(amount=0, schema_version=1).items() if k != "kind"}, ErrorCode.NON_POSITIVE_AMOUNT),
        (event(kind="refund", amount=5), ErrorCode.AMOUNT_SIGN),
        (event(kind="gift"), ErrorCode.INVALID_KIND),
        (event(amount=1e12), ErrorCode.AMOUNT_TOO_LARGE),
        (event(currency="eur"), ErrorCode.INVALID_CURRENCY),
        (event(event_time="yesterday"), ErrorCode.INVALID_TIMESTAMP),
        (event(event_time="2026-03-01T12:30:00"), ErrorCode.INVALID_TIMESTAMP),
        (event(event_time="2026-02-30T12:30:00Z"), ErrorCode.INVALID_TIMESTAMP),
        (event(event_time="2030-01-01T00:00:00Z"), ErrorCode.FUTURE_TIMESTAMP),
        (event(event_time="1969-12-31T23:59:59Z"), ErrorCode.STALE_TIMESTAMP),
        (event(merchant_category="casino"), ErrorCode.INVALID_CATEGORY),
        (event(channel="fax"), ErrorCode.INVALID_CHANNEL),
    ],
)
def test_contract_violations_are_rejected_with_a_code(document: dict[str, object], code: ErrorCode) -> None:
    result = validate_record(document, now=NOW)
    assert isinstance(result, InvalidEvent), result
    assert result.code == code
    assert result.message


def test_nan_literal_in_json_text_is_a_non_finite_amount() -> None:
    raw = encoded(example_event()).replace(b"42.5", b"NaN")
    result = validate_bytes(raw, now=NOW)
    assert isinstance(result, InvalidEvent)
    assert result.code == ErrorCode.NON_FINITE_AMOUNT


def test_spark_schema_has_every_field_in_order() -> None:
    names = [part.split()[0] for part in spark_schema_ddl().split(", ")]
    assert tuple(names) == FIELD_NAMES


def test_docs_list_every_field_and_every_rejection_code() -> None:
    docs = render_docs()
    for name in FIELD_NAMES:
        assert f"`{name}`" in docs
    for code in ErrorCode:
        assert f"`{code.value}`" in docs


def test_committed_contract_docs_are_current() -> None:
    committed = Path(__file__).parents[2] / "docs" / "transactions.md"
    assert committed.read_text() == render_docs(), "run: activity schema docs --output docs/transactions.md"


@pytest.mark.parametrize(("written", "valid"), [
    ("2026-02-01T10:00:00Z", True),
    ("2026-02-01 10:00:00Z", True),
    ("2026-02-01T10:00Z", True),
    ("2026-02-01T10:00:00.5Z", True),
    ("2026-02-01T10:00:00.123456789Z", True),  # Java's Instant writes nanoseconds
    ("2026-02-01T05:00:00-05:00", True),
    ("2026-02-01T10:00:00+0100", False),  # what fromisoformat would also take, the contract's grammar does not
    ("2026-02-01T10:00:00+01", False),
    ("20260201T100000Z", False),
    ("2026-W05-1T10:00:00Z", False),
    ("2026-02-01x10:00:00Z", False),
    ("2026-02-01T10:00:00z", False),
    ("2026-02-01T10:00:00Z\n", False),
    ("2026-02-30T10:00:00Z", False),
    ("0000-01-01T00:00:00Z", False),
])
def test_event_time_follows_one_iso_8601_grammar(written: str, valid: bool) -> None:
    result = validate_bytes(encoded(event(event_time=written)), now=NOW)
    assert isinstance(result, Transaction) == valid, result
    if not valid:
        assert isinstance(result, InvalidEvent) and result.code == ErrorCode.INVALID_TIMESTAMP


@pytest.mark.parametrize(("field", "value"), [("customer_id", "c-1\n"), ("currency", "EUR\n")])
def test_patterns_match_the_whole_value(field: str, value: str) -> None:
    result = validate_bytes(encoded(event(**{field: value})), now=NOW)
    assert isinstance(result, InvalidEvent)
    assert result.code == (ErrorCode.INVALID_ID if field == "customer_id" else ErrorCode.INVALID_CURRENCY)


def test_real_ledgers_go_back_to_1970_and_a_later_floor_is_a_setting() -> None:
    from activity_settings import SettingsError, load_settings

    old = encoded(event(event_time="1997-01-01T00:00:00Z"))
    assert isinstance(validate_bytes(old, now=NOW), Transaction)
    before = validate_bytes(encoded(event(event_time="1969-12-31T23:59:59Z")), now=NOW)
    assert isinstance(before, InvalidEvent) and before.code == ErrorCode.STALE_TIMESTAMP

    floor = load_settings(streaming={"earliest_event_time": "2000-01-01"}).streaming.earliest_event_time
    assert floor == datetime(2000, 1, 1, tzinfo=UTC)
    stale = validate_bytes(old, now=NOW, earliest=floor)
    assert isinstance(stale, InvalidEvent) and stale.code == ErrorCode.STALE_TIMESTAMP
    # the stream's validator in the JVM applies the same floor: tests/integration/test_contract_sql.py
    with pytest.raises(SettingsError, match="streaming.earliest_event_time"):
        load_settings(streaming={"earliest_event_time": "1969-12-31"})


def test_version_2_books_refunds_reversals_and_zero_amounts_and_version_1_still_holds() -> None:
    refund = validate_bytes(encoded(event(kind="refund", amount=-12.5)), now=NOW)
    assert isinstance(refund, Transaction) and (refund.kind, refund.amount) == ("refund", -12.5)
    reversal = validate_bytes(encoded(event(kind="reversal", amount=0)), now=NOW)
    assert isinstance(reversal, Transaction) and reversal.kind == "reversal"
    free = validate_bytes(encoded(event(amount=0)), now=NOW)
    assert isinstance(free, Transaction) and (free.kind, free.amount) == ("purchase", 0.0)
    assert json.loads(encoded(refund.to_json()))["kind"] == "refund"

    first = {k: v for k, v in event().items() if k != "kind"} | {"schema_version": 1}
    old = validate_bytes(encoded(first), now=NOW)
    assert isinstance(old, Transaction) and (old.schema_version, old.kind) == (1, "purchase")
    assert "kind" not in old.to_json()  # written back as it came: a version 1 event
    missing = validate_bytes(encoded({k: v for k, v in event().items() if k != "kind"}), now=NOW)
    assert isinstance(missing, InvalidEvent) and missing.code == ErrorCode.MISSING_FIELD and "kind" in missing.message
