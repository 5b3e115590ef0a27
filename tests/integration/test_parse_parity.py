"""The contract in Spark SQL (the stream's validator) gives Python's verdict on every record.

``streaming.schema.check_document`` is the contract's reference; ``streaming.parse.parse`` runs the
same rules as Spark SQL expressions in the JVM. The malformed corpus, the edge cases below and a
valid event of each shape go through both: same verdict and same code on every record, and for a
valid one the same fields.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from streaming.schema import InvalidEvent, example_event, validate_bytes
from tests.corpus import malformed

pytestmark = pytest.mark.integration

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def _event(**changes: object) -> dict[str, object]:
    return {**example_event(), "event_time": "2026-02-01T10:00:00Z", **changes}


def _raw(**changes: object) -> bytes:
    return json.dumps(_event(**changes)).encode()


def edge_cases() -> list[tuple[str, bytes | None]]:
    """Records where a second implementation of JSON or ISO 8601 would most likely differ."""
    valid = _raw()

    def version(literal: bytes) -> bytes:
        return valid.replace(b'"schema_version": 1', b'"schema_version": ' + literal)

    return [
        ("valid", valid),
        ("null value", None),
        ("integer amount", _raw(amount=42)),
        ("amount 1.0", valid.replace(b'"amount": 42.5', b'"amount": 1.0')),
        ("amount with exponent", valid.replace(b'"amount": 42.5', b'"amount": 4.25E1')),
        ("amount at the limit", _raw(amount=1_000_000)),
        ("amount just past the limit", _raw(amount=1_000_000.01)),
        ("amount -Infinity", valid.replace(b'"amount": 42.5', b'"amount": -Infinity')),
        ("amount 1e400", valid.replace(b'"amount": 42.5', b'"amount": 1e400')),
        ("NaN in another field", version(b'NaN')),
        ("schema_version 1.0", version(b'1.0')),
        ("schema_version true", _raw(schema_version=True)),
        ("schema_version past 64 bits", version(b'123456789012345678901234')),
        ("schema_version past a long", version(b'9223372036854775808')),
        ("schema_version 2**64 - 1", version(b'18446744073709551615')),
        ("schema_version 2**64", version(b'18446744073709551616')),
        ("schema_version below a long", version(b'-9223372036854775809')),
        ("amount past 64 bits", valid.replace(b'"amount": 42.5', b'"amount": 123456789012345678901234')),
        ("duplicate key, last wins", valid[:-1] + b', "channel": "online"}'),
        ("duplicate key, last breaks", valid[:-1] + b', "channel": "fax"}'),
        ("nested object", _raw(merchant_id={"id": "m1"})),
        ("array field", _raw(currency=["EUR"])),
        ("json string", b'"a transaction"'),
        ("json null", b"null"),
        ("json true", b"true"),
        ("whitespace around", b"  \n" + valid + b"\n "),
        ("byte order mark", b"\xef\xbb\xbf" + valid),
        ("trailing comma", valid[:-1] + b",}"),
        ("single quotes", valid.replace(b'"', b"'")),
        ("two unknown fields", _raw(zeta=1, alpha=2)),
        ("missing and unknown", json.dumps({k: v for k, v in {**_event(), "x": 1}.items() if k != "channel"}).encode()),
        ("id with a trailing newline", _raw(customer_id="c-1\n")),
        ("id of 64 chars", _raw(customer_id="c" * 64)),
        ("id of 65 chars", _raw(customer_id="c" * 65)),
        ("empty id", _raw(merchant_id="")),
        ("currency with a newline", _raw(currency="EUR\n")),
        ("unicode escape in an id", valid.replace(b'"customer_id": "', b'"customer_id": "\\u00e9')),
        ("time with an offset", _raw(event_time="2026-02-01T11:00:00+01:00")),
        ("time with a space", _raw(event_time="2026-02-01 10:00:00Z")),
        ("time without seconds", _raw(event_time="2026-02-01T10:00Z")),
        ("time without seconds, offset", _raw(event_time="2026-02-01T11:00+01:00")),
        ("time with a space, no seconds", _raw(event_time="2026-02-01 10:00Z")),
        ("time with one fraction digit", _raw(event_time="2026-02-01T10:00:00.5Z")),
        ("time with micros", _raw(event_time="2026-02-01T10:00:00.123456Z")),
        ("time with nanos", _raw(event_time="2026-02-01T10:00:00.123456789Z")),
        ("time with a negative offset", _raw(event_time="2026-02-01T05:00:00-05:00")),
        ("time with a compact offset", _raw(event_time="2026-02-01T10:00:00+0100")),
        ("time with an hour offset", _raw(event_time="2026-02-01T10:00:00+01")),
        ("basic format", _raw(event_time="20260201T100000Z")),
        ("week date", _raw(event_time="2026-W05-1T10:00:00Z")),
        ("lower-case z", _raw(event_time="2026-02-01T10:00:00z")),
        ("date only", _raw(event_time="2026-02-01")),
        ("february 30", _raw(event_time="2026-02-30T10:00:00Z")),
        ("hour 24", _raw(event_time="2026-02-01T24:00:00Z")),
        ("second 60", _raw(event_time="2026-02-01T10:00:60Z")),
        ("year 0000", _raw(event_time="0000-01-01T00:00:00Z")),
        ("time with a trailing newline", _raw(event_time="2026-02-01T10:00:00Z\n")),
        ("five minutes ahead", _raw(event_time=(NOW + timedelta(minutes=5)).isoformat())),
        ("five minutes and a second ahead", _raw(event_time=(NOW + timedelta(minutes=5, seconds=1)).isoformat())),
        ("first moment of 2000", _raw(event_time="2000-01-01T00:00:00Z")),
        ("last moment of 1999", _raw(event_time="1999-12-31T23:59:59.999Z")),
        ("offset crossing into 2000", _raw(event_time="2000-01-01T00:30:00+01:00")),
        ("empty category", _raw(merchant_category="")),
    ]


def test_spark_and_python_give_the_same_verdict_on_every_record(spark) -> None:
    from pyspark.sql import functions as F

    from streaming.parse import PARSED_COLUMNS, parse

    records = [(name, value) for name, value, _ in malformed("parity")] + edge_cases()
    rows = [("transactions", 0, offset, b"k", value) for offset, (_, value) in enumerate(records)]
    raw = spark.createDataFrame(rows, "topic STRING, partition INT, offset BIGINT, key BINARY, value BINARY")
    parsed = parse(raw, now=F.timestamp_micros(F.lit(int(NOW.timestamp() * 1_000_000))))
    assert tuple(parsed.columns) == PARSED_COLUMNS
    by_offset = {row["offset"]: row for row in parsed.withColumn("event_us", F.unix_micros("event_time")).collect()}
    assert len(by_offset) == len(records)

    disagreements = []
    for offset, (name, value) in enumerate(records):
        expected = validate_bytes(value, now=NOW)
        got = by_offset[offset]
        if isinstance(expected, InvalidEvent):
            if got["error_code"] != expected.code.value or not got["error_message"]:
                disagreements.append((name, expected.code.value, got["error_code"], got["error_message"]))
            elif (got["topic"], got["key"], got["value"]) != ("transactions", b"k", value):
                disagreements.append((name, "raw record kept", got["topic"], got["value"]))
            continue
        fields = {"transaction_id": expected.transaction_id, "customer_id": expected.customer_id,
                  "amount": expected.amount, "currency": expected.currency,
                  "event_us": round(expected.event_time.timestamp() * 1_000_000), "merchant_id": expected.merchant_id,
                  "merchant_category": expected.merchant_category, "channel": expected.channel}
        actual = {name: got[name] for name in fields}
        if got["error_code"] is not None or actual != fields or got["value"] is not None:
            disagreements.append((name, "valid", got["error_code"], got["error_message"], actual))
    assert not disagreements, "\n".join(map(repr, disagreements))
    verdicts = {by_offset[offset]["error_code"] for offset in range(len(records))}
    assert None in verdicts and len(verdicts) > 15  # valid records and most rejection codes were exercised
