"""The contract in the JVM (streaming.contract_sql) against its Python reference (streaming.schema).

Every record of the malformed corpus, the edge cases, fuzzed events and simulated traffic goes
through both validators in the same run: the verdict and the rejection code must be equal on
every one, and so must the message (but for undecodable bytes and broken JSON, where Python's
message adds the decoder's own words after the same prefix). A valid event's fields must be equal.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from streaming.contract_sql import PARSED_COLUMNS, validate
from streaming.schema import ErrorCode, InvalidEvent, Transaction, encode_trusted, validate_bytes
from streaming.simulator import day_events, make_population
from tests.contract_cases import all_records

_RAW_DDL = "topic STRING, partition INT, offset BIGINT, key BINARY, value BINARY"
_DECODER_WORDS = {ErrorCode.INVALID_JSON.value, ErrorCode.INVALID_ENCODING.value}


def _simulated(count: int) -> list[tuple[str, bytes]]:
    population = make_population(200, date(2026, 1, 1), 30)
    values = encode_trusted(day_events(population, 3)).to_pylist()[:count]
    return [(f"simulated {i}", value.encode() if isinstance(value, str) else value) for i, value in enumerate(values)]


def _validated(spark, records: list[tuple[str, bytes | None]], earliest: datetime | None = None) -> list:
    rows = [("transactions", i % 3, i, b"key", value) for i, (_, value) in enumerate(records)]
    raw = spark.createDataFrame(rows, _RAW_DDL)
    parsed = validate(raw) if earliest is None else validate(raw, earliest)
    assert tuple(parsed.columns) == PARSED_COLUMNS
    return parsed.orderBy("offset").collect()


def _fields(event: Transaction) -> tuple:
    return (event.transaction_id, event.customer_id, event.amount, event.currency, event.event_time,
            event.merchant_id, event.merchant_category, event.channel, event.kind)


def _row_fields(row) -> tuple:  # noqa: ANN001 - a Spark Row
    moment = row.event_time.replace(tzinfo=UTC) if row.event_time is not None else None
    return (row.transaction_id, row.customer_id, row.amount, row.currency, moment, row.merchant_id,
            row.merchant_category, row.channel, row.kind)


def test_both_validators_give_every_record_the_same_verdict_code_and_message(spark) -> None:
    records = [*all_records("parity", fuzz=3000), *_simulated(400)]
    now = datetime.now(UTC)
    rows = _validated(spark, records)
    assert len(rows) == len(records)
    disagreements = []
    codes: set[str | None] = set()
    for (name, value), row in zip(records, rows, strict=True):
        reference = validate_bytes(value, now)
        if isinstance(reference, InvalidEvent):
            code, message = reference.code.value, reference.message
            same_message = (message.startswith(row.error_message) if code in _DECODER_WORDS and row.error_message
                            else message == row.error_message)
            agree = row.error_code == code and same_message and row.transaction_id is None and row.value == value
        else:
            code = None
            agree = row.error_code is None and _row_fields(row) == _fields(reference) and row.value is None
        codes.add(code)
        if not agree:
            disagreements.append((name, value if value is None else value[:160], reference, row))
    assert not disagreements, f"{len(disagreements)} records judged differently, e.g. {disagreements[:3]}"
    # the records reach every rule (but the duplicate check, which is the stream's, not the validator's)
    assert codes == {None, *(code.value for code in ErrorCode if code != ErrorCode.DUPLICATE_TRANSACTION)}


@pytest.mark.parametrize("floor", [datetime(2000, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)])
def test_the_floor_setting_applies_in_the_jvm(spark, floor: datetime) -> None:
    old = [("1997", b'{"schema_version": 2, "transaction_id": "t1", "customer_id": "c1", "amount": 3.5, '
                    b'"currency": "EUR", "event_time": "1997-01-01T00:00:00Z", "merchant_id": "m1", '
                    b'"merchant_category": "grocery", "channel": "online", "kind": "purchase"}')]
    [row] = _validated(spark, old, floor)
    expected = ErrorCode.STALE_TIMESTAMP.value if floor.year == 2000 else None
    assert row.error_code == expected
    reference = validate_bytes(old[0][1], earliest=floor)
    assert (reference.code.value if isinstance(reference, InvalidEvent) else None) == expected
