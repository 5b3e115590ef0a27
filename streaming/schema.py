"""The `transactions` contract: one definition that yields validation, the Spark schema and docs.

A value is a UTF-8 JSON object, keyed by ``customer_id`` on the topic. Version 1 fields are
listed in ``FIELDS``; anything else is rejected with a typed ``ErrorCode`` so that a bad event
can go to the dead-letter topic with a reason a person can act on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

# The enumerations are the platform's vocabulary, shared with the feature definitions.
from features.state import CHANNELS, MERCHANT_CATEGORIES

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = frozenset({1, 2})
# What an event records (version 2 on; a version 1 event is a purchase). A real ledger also books
# refunds and reversals, with negative (or zero) amounts: they are valid events, kept apart from
# purchases downstream (the activity the models predict counts purchases).
PURCHASE = "purchase"
KINDS = (PURCHASE, "refund", "reversal")
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_AMOUNT = 1_000_000.0
MAX_FUTURE = timedelta(minutes=5)
# The contract's floor: real ledgers go back decades. A deployment that wants a later floor sets
# `streaming.earliest_event_time`; both validators take it as ``earliest``.
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
# Whole-value patterns, written once for both engines: Python applies them with ``fullmatch``,
# Spark's JVM validator (streaming.contract_sql) as ``^(?:...)\z``. ASCII digits only: ``\d`` would
# also take other scripts' digits in Python.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
CURRENCY_PATTERN = re.compile(r"[A-Z]{3}")
# ISO 8601 as producers write it (Java's Instant, JavaScript's toISOString, Python's isoformat):
# date, `T` or a space, hh:mm[:ss[.fraction]], then `Z` or a +hh:mm offset. Year 0000 does not exist.
EVENT_TIME_PATTERN = re.compile(
    r"(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})")



class ErrorCode(StrEnum):
    """Why an event was rejected; carried on every dead letter."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_ID = "invalid_id"
    NON_FINITE_AMOUNT = "non_finite_amount"
    NON_POSITIVE_AMOUNT = "non_positive_amount"
    AMOUNT_TOO_LARGE = "amount_too_large"
    INVALID_CURRENCY = "invalid_currency"
    INVALID_TIMESTAMP = "invalid_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    INVALID_CATEGORY = "invalid_category"
    INVALID_CHANNEL = "invalid_channel"
    INVALID_KIND = "invalid_kind"
    AMOUNT_SIGN = "amount_sign"
    DUPLICATE_TRANSACTION = "duplicate_transaction"


@dataclass(frozen=True)
class Field:
    name: str
    json_type: str  # "string" | "integer" | "number"
    spark_type: str  # a Spark SQL DDL type
    description: str
    rule: str
    since: int = 1  # the first schema_version with this field


FIELDS: tuple[Field, ...] = (
    Field("schema_version", "integer", "INT", "Contract version of this event.",
          f"one of {sorted(SUPPORTED_VERSIONS)}"),
    Field("transaction_id", "string", "STRING", "Globally unique id; duplicates are dropped.",
          "1-64 chars of A-Z a-z 0-9 _ . : -"),
    Field("customer_id", "string", "STRING", "The customer; also the Kafka message key.",
          "1-64 chars of A-Z a-z 0-9 _ . : -"),
    Field("amount", "number", "DOUBLE", "Transaction amount in `currency` units.",
          f"finite, at most {MAX_AMOUNT:,.0f} either way; version 1: > 0; version 2: >= 0 for a purchase, "
          "<= 0 for a refund or a reversal"),
    Field("currency", "string", "STRING", "ISO 4217 currency code.", "three upper-case letters"),
    Field("event_time", "string", "STRING",
          "When it happened: ISO 8601 with a UTC offset, `YYYY-MM-DDThh:mm[:ss[.fff]]` then `Z` or `+hh:mm`.",
          f"from {EARLIEST_EVENT_TIME:%Y-%m-%d} (or `streaming.earliest_event_time`), "
          f"at most {MAX_FUTURE} in the future"),
    Field("merchant_id", "string", "STRING", "The merchant.", "1-64 chars of A-Z a-z 0-9 _ . : -"),
    Field("merchant_category", "string", "STRING", "Merchant category.",
          "one of " + ", ".join(MERCHANT_CATEGORIES)),
    Field("channel", "string", "STRING", "Where the customer paid.", "one of " + ", ".join(CHANNELS)),
    Field("kind", "string", "STRING", "What it records: a purchase, or a refund or reversal of one.",
          "one of " + ", ".join(KINDS), since=2),
)
FIELD_NAMES = tuple(field.name for field in FIELDS)
# The fields of each supported version (an unsupported one is checked against the current fields).
VERSION_FIELDS = {version: tuple(f.name for f in FIELDS if f.since <= version) for version in SUPPORTED_VERSIONS}
_VERSION_SETS = {version: frozenset(names) for version, names in VERSION_FIELDS.items()}
_CATEGORY_SET = frozenset(MERCHANT_CATEGORIES)
_PYTHON_TYPES = {"string": frozenset({str}), "integer": frozenset({int}), "number": frozenset({int, float})}
_TYPE_CHECKS = {version: tuple((f.name, _PYTHON_TYPES[f.json_type], f.json_type) for f in FIELDS if f.since <= version)
                for version in (*SUPPORTED_VERSIONS, SCHEMA_VERSION)}
_CHANNEL_SET = frozenset(CHANNELS)
_KIND_SET = frozenset(KINDS)


@dataclass(frozen=True, slots=True)
class Transaction:
    """A valid transaction, with ``event_time`` normalized to an aware UTC datetime."""

    transaction_id: str
    customer_id: str
    amount: float
    currency: str
    event_time: datetime
    merchant_id: str
    merchant_category: str
    channel: str
    schema_version: int = SCHEMA_VERSION
    kind: str = PURCHASE

    def to_json(self) -> dict[str, Any]:
        document = {
            "schema_version": self.schema_version,
            "transaction_id": self.transaction_id,
            "customer_id": self.customer_id,
            "amount": self.amount,
            "currency": self.currency,
            "event_time": format_event_time(self.event_time),
            "merchant_id": self.merchant_id,
            "merchant_category": self.merchant_category,
            "channel": self.channel,
        }
        if self.schema_version >= 2:
            document["kind"] = self.kind
        return document


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    code: ErrorCode
    message: str


def format_event_time(moment: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z`` suffix."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def parse_event_time(text: str) -> datetime | None:
    """Parse ISO 8601 with an explicit offset (``Z`` or ``±HH:MM``); naive times are invalid."""
    if not 10 <= len(text) <= 40 or not EVENT_TIME_PATTERN.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def decode_value(raw: bytes | None) -> Any:
    """Bytes -> JSON document, or the ``InvalidEvent`` saying why it is not one."""
    if raw is None:
        return InvalidEvent(ErrorCode.NOT_AN_OBJECT, "empty message value")
    if len(raw) > MAX_PAYLOAD_BYTES:
        return InvalidEvent(ErrorCode.PAYLOAD_TOO_LARGE, f"{len(raw)} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # the slow path below says precisely what is wrong
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidEvent(ErrorCode.INVALID_ENCODING, f"not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        return json.loads(text)  # accepts NaN/Infinity, which the amount rule then names
    except ValueError as exc:
        return InvalidEvent(ErrorCode.INVALID_JSON, f"not JSON: {exc}")


def check_document(document: Any, now: datetime, earliest: datetime = EARLIEST_EVENT_TIME) -> InvalidEvent | datetime:
    """The first broken rule, or the event time (UTC) of a valid event (``earliest``: the stale floor)."""
    if not isinstance(document, dict):
        return InvalidEvent(ErrorCode.NOT_AN_OBJECT, f"expected a JSON object, got {_json_type_name(document)}")
    claimed = document.get("schema_version")
    version = claimed if type(claimed) is int and claimed in _VERSION_SETS else SCHEMA_VERSION
    fields = _VERSION_SETS[version]
    if document.keys() != fields:
        missing = [name for name in VERSION_FIELDS[version] if name not in document]
        if missing:
            return InvalidEvent(ErrorCode.MISSING_FIELD, "missing field(s): " + ", ".join(missing))
        unknown = sorted(str(name) for name in set(document) - fields)
        return InvalidEvent(ErrorCode.UNKNOWN_FIELD, "unknown field(s): " + ", ".join(unknown)[:200]
                            + (f" (not in schema_version {version})" if version < SCHEMA_VERSION else ""))
    for name, allowed, json_type in _TYPE_CHECKS[version]:
        value = document[name]
        if type(value) not in allowed:  # exact types: a JSON true is not an integer
            return InvalidEvent(ErrorCode.WRONG_TYPE, f"{name} must be a {json_type}, got {_json_type_name(value)}")
    version = document["schema_version"]
    if version not in SUPPORTED_VERSIONS:
        return InvalidEvent(ErrorCode.UNSUPPORTED_VERSION, f"schema_version {version} is not supported")
    for name in ("transaction_id", "customer_id", "merchant_id"):
        if not ID_PATTERN.fullmatch(document[name]):
            return InvalidEvent(ErrorCode.INVALID_ID, f"{name} {document[name][:80]!r} is not a valid id")
    kind = document.get("kind", PURCHASE)
    if kind not in _KIND_SET:
        return InvalidEvent(ErrorCode.INVALID_KIND, f"kind {kind[:40]!r} is not one of {', '.join(KINDS)}")
    amount = document["amount"]
    if not math.isfinite(amount):
        return InvalidEvent(ErrorCode.NON_FINITE_AMOUNT, f"amount {amount} is not finite")
    if version == 1 and amount <= 0:
        return InvalidEvent(ErrorCode.NON_POSITIVE_AMOUNT,
                            f"amount {amount} must be positive (schema_version 2 books refunds and zero amounts)")
    if (amount < 0) if kind == PURCHASE else (amount > 0):
        return InvalidEvent(ErrorCode.AMOUNT_SIGN, f"amount {amount} of a {kind} must be "
                            + ("zero or positive" if kind == PURCHASE else "zero or negative"))
    if abs(amount) > MAX_AMOUNT:
        return InvalidEvent(ErrorCode.AMOUNT_TOO_LARGE, f"amount {amount} exceeds {MAX_AMOUNT:,.0f}")
    if not CURRENCY_PATTERN.fullmatch(document["currency"]):
        return InvalidEvent(ErrorCode.INVALID_CURRENCY, f"currency {document['currency'][:20]!r} is not ISO 4217")
    moment = parse_event_time(document["event_time"])
    if moment is None:
        return InvalidEvent(ErrorCode.INVALID_TIMESTAMP,
                            f"event_time {document['event_time'][:60]!r} is not ISO 8601 with an offset")
    if moment > now + MAX_FUTURE:
        return InvalidEvent(ErrorCode.FUTURE_TIMESTAMP, f"event_time {format_event_time(moment)} is in the future")
    if moment < earliest:
        return InvalidEvent(ErrorCode.STALE_TIMESTAMP, f"event_time {format_event_time(moment)} is too old")
    if document["merchant_category"] not in _CATEGORY_SET:
        return InvalidEvent(ErrorCode.INVALID_CATEGORY,
                            f"merchant_category {document['merchant_category'][:40]!r} is unknown")
    if document["channel"] not in _CHANNEL_SET:
        return InvalidEvent(ErrorCode.INVALID_CHANNEL, f"channel {document['channel'][:40]!r} is unknown")
    return moment


def validate_bytes(raw: bytes | None, now: datetime | None = None,
                   earliest: datetime = EARLIEST_EVENT_TIME) -> Transaction | InvalidEvent:
    """Validate one Kafka message value."""
    document = decode_value(raw)
    if isinstance(document, InvalidEvent):
        return document
    return validate_record(document, now, earliest)


def validate_record(document: Any, now: datetime | None = None,
                    earliest: datetime = EARLIEST_EVENT_TIME) -> Transaction | InvalidEvent:
    """Validate a decoded JSON document against the contract."""
    checked = check_document(document, now or datetime.now(UTC), earliest)
    if isinstance(checked, InvalidEvent):
        return checked
    return Transaction(
        transaction_id=document["transaction_id"],
        customer_id=document["customer_id"],
        amount=float(document["amount"]),
        currency=document["currency"],
        event_time=checked,
        merchant_id=document["merchant_id"],
        merchant_category=document["merchant_category"],
        channel=document["channel"],
        schema_version=document["schema_version"],
        kind=document.get("kind", PURCHASE),
    )


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def encode_trusted(table: pa.Table) -> pa.Array:
    """JSON values for a table of contract columns, vectorized in Arrow.

    Only for tables whose strings need no JSON escaping (ids match ``ID_PATTERN``, enums, the
    currency): the simulator's. Anything else goes through ``Transaction.to_json``.
    """
    event_time = pc.replace_substring(
        pc.cast(pc.cast(table["event_time"], pa.timestamp("ms")), pa.string()), " ", "T")
    return pc.binary_join_element_wise(
        '{"schema_version":', pc.cast(table["schema_version"], pa.string()),
        ',"transaction_id":"', table["transaction_id"],
        '","customer_id":"', table["customer_id"],
        '","amount":', pc.cast(table["amount"], pa.string()),
        ',"currency":"', table["currency"],
        '","event_time":"', event_time,
        'Z","merchant_id":"', table["merchant_id"],
        '","merchant_category":"', table["merchant_category"],
        '","channel":"', table["channel"],
        '","kind":"', table["kind"] if "kind" in table.column_names else pa.scalar(PURCHASE),
        '"}', "",
    )


def spark_schema_ddl() -> str:
    """The value's schema as Spark DDL (``from_json`` input)."""
    return ", ".join(f"{field.name} {field.spark_type}" for field in FIELDS)


def spark_schema():  # pyspark is imported lazily
    from pyspark.sql.types import StructType

    return StructType.fromDDL(spark_schema_ddl())


def render_docs() -> str:
    """Markdown reference of the contract, generated from ``FIELDS`` and ``ErrorCode``."""
    lines = [
        "# The `transactions` contract",
        "",
        f"Value: a UTF-8 JSON object of at most {MAX_PAYLOAD_BYTES:,} bytes; key: `customer_id`. "
        f"Current `schema_version`: {SCHEMA_VERSION}; version 1 events (without `kind`: purchases, amounts "
        "> 0) are still accepted. Every field of the event's version is required; unknown fields are rejected.",
        "",
        "| field | JSON type | Spark type | rule | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| `{f.name}` | {f.json_type} | {f.spark_type} | {f.rule}"
              f"{f' (schema_version {f.since} on)' if f.since > 1 else ''} | {f.description} |" for f in FIELDS]
    lines += [
        "",
        "## Rejections",
        "",
        "An event that breaks a rule goes to `transactions.dlq` with one of these codes:",
        "",
    ]
    lines += [f"- `{code.value}`" for code in ErrorCode]
    lines += ["", "Example:", "", "```json",
              json.dumps(example_event(), indent=2), "```", ""]
    return "\n".join(lines)


def example_event() -> dict[str, Any]:
    return Transaction(
        transaction_id="tx-42-00001-0000007", customer_id="c000123", amount=42.5, currency="EUR",
        event_time=datetime(2026, 3, 1, 12, 30, tzinfo=UTC), merchant_id="m01234",
        merchant_category="grocery", channel="in_store",
    ).to_json()
