"""The `transactions` contract as Spark SQL expressions: the stream validates in the JVM.

``parse(raw, now)`` gives each Kafka record the columns ``PARSED_COLUMNS`` names: the
event's fields when it is valid, else the first broken rule's ``ErrorCode`` and a message, with
the raw record kept for the dead-letter topic. The rules, their order and their limits come from
``streaming.schema``, whose ``check_document`` stays the contract's reference: a test runs the
malformed corpus through both and requires the same verdict and code on every record.

JSON is parsed once into Spark's VARIANT (``try_parse_json``); the variant's per-field types give
the contract's exact JSON types (a JSON ``true`` is not an integer, ``1.0`` is a number, not an
integer). Two differences from Python's ``json`` module are bridged here:

- ``NaN``, ``Infinity`` and ``-Infinity``: Python reads them, the variant parser does not. A value
  that fails to parse is parsed again with those bare words (after ``:``, ``[`` or ``,``) read as
  ``1e400``, an infinite double, so that the amount rule names them as Python's does.
- duplicate keys: the last one wins in Python; ``parse`` sets ``VARIANT_SESSION_CONF`` on its
  session so that Spark does the same instead of rejecting the value.

Known limit: a literal with a zero fraction and 19 or 20 digits before the point
(``10000000000000000000.0``) reads as an integer here and as a number in Python.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.state import CHANNELS, MERCHANT_CATEGORIES
from streaming.schema import (
    CURRENCY_PATTERN,
    EARLIEST_EVENT_TIME,
    EVENT_TIME_PATTERN,
    FIELD_NAMES,
    FIELDS,
    ID_PATTERN,
    MAX_AMOUNT,
    MAX_FUTURE,
    MAX_PAYLOAD_BYTES,
    SUPPORTED_VERSIONS,
    ErrorCode,
)

VARIANT_SESSION_CONF = {"spark.sql.variant.allowDuplicateKeys": "true"}  # the last duplicate key wins

# The JSON types each field accepts, in the words of ``schema._json_type_name``.
_ACCEPTS = {"string": ("string",), "integer": ("integer",), "number": ("integer", "number")}
_MAX_UNSIGNED_LONG = f"CAST({2**64 - 1} AS DECIMAL(20,0))"
_NO_SECONDS = r"^(.{10}[T ][0-9]{2}:[0-9]{2})(?=Z|[+-])"  # Spark's cast wants the seconds before an offset
_NON_FINITE = r"(?<=[:\[,]\s{0,32}-?)(?:NaN|Infinity)(?=\s*[,}\]])"
# The parsed rows: the record's place, its topic, key and raw value (kept for rejected records only:
# the dead-letter topic carries them), the verdict (error_code null for a valid event) and the fields.
PARSED_COLUMNS = ("topic", "partition", "offset", "key", "value", "error_code", "error_message", "transaction_id",
                  "customer_id", "amount", "currency", "event_time", "merchant_id", "merchant_category", "channel")
_TEXT_FIELDS = ("transaction_id", "customer_id", "currency", "merchant_id", "merchant_category", "channel")


def _whole(pattern: str) -> str:
    """A Python ``fullmatch`` pattern as a Java ``find`` pattern (``\\z``: no trailing newline slips by)."""
    return rf"^(?:{pattern})\z"


def _json_type(document: Column) -> Column:
    """A variant value's JSON type, named as ``streaming.schema`` names it."""
    schema = F.schema_of_variant(document)
    return (
        F.when(schema == "VOID", "null")
        .when(schema == "BOOLEAN", "boolean")
        .when(schema == "STRING", "string")
        .when(schema == "BIGINT", "integer")
        .when(schema.rlike(r"^DECIMAL\((19|20),0\)$")  # Python (orjson) reads integers to 2**64 - 1 as int
              & F.try_variant_get(document, "$", "decimal(20,0)").between(F.lit(0), F.expr(_MAX_UNSIGNED_LONG)),
              "integer")
        .when(schema.startswith("DECIMAL") | schema.isin("DOUBLE", "FLOAT"), "number")
        .when(schema.startswith("ARRAY"), "array")
        .when(schema.startswith("OBJECT"), "object")
        .otherwise(F.lower(schema))
    )


def _field(name: str) -> Column:
    return F.variant_get(F.col("_document"), f"$.{name}", "variant")


def _quoted(value: Column, length: int) -> Column:
    return F.concat(F.lit("'"), F.substring(value, 1, length), F.lit("'"))


def _rules(now: Column) -> list[tuple[Column, ErrorCode, Column]]:
    """(broken when, code, message), in ``check_document``'s order; each may assume the ones before held."""
    value, document, keys = F.col("value"), F.col("_document"), F.col("_keys")
    text = {name: F.try_variant_get(document, f"$.{name}", "string") for name in _TEXT_FIELDS + ("event_time",)}
    amount = F.try_variant_get(document, "$.amount", "double")
    moment = F.col("_event_time")
    expected = F.array(*(F.lit(name) for name in FIELD_NAMES))
    missing = F.filter(expected, lambda name: ~F.array_contains(keys, name))
    unknown = F.array_sort(F.array_except(keys, expected))

    rules: list[tuple[Column, ErrorCode, Column]] = [
        (value.isNull(), ErrorCode.NOT_AN_OBJECT, F.lit("empty message value")),
        (F.octet_length(value) > MAX_PAYLOAD_BYTES, ErrorCode.PAYLOAD_TOO_LARGE,
         F.format_string(f"%d bytes exceeds the limit of {MAX_PAYLOAD_BYTES}", F.octet_length(value))),
        (~F.is_valid_utf8(value), ErrorCode.INVALID_ENCODING, F.lit("not UTF-8")),
        (document.isNull(), ErrorCode.INVALID_JSON, F.lit("not JSON")),
        (_json_type(document) != "object", ErrorCode.NOT_AN_OBJECT,
         F.concat(F.lit("expected a JSON object, got "), _json_type(document))),
        (F.size(missing) > 0, ErrorCode.MISSING_FIELD,
         F.concat(F.lit("missing field(s): "), F.array_join(missing, ", "))),
        (F.size(unknown) > 0, ErrorCode.UNKNOWN_FIELD,
         F.concat(F.lit("unknown field(s): "), F.substring(F.array_join(unknown, ", "), 1, 200))),
    ]
    for field in FIELDS:
        kind = _json_type(_field(field.name))
        rules.append((~kind.isin(*_ACCEPTS[field.json_type]), ErrorCode.WRONG_TYPE,
                      F.concat(F.lit(f"{field.name} must be a {field.json_type}, got "), kind)))
    version = F.try_variant_get(document, "$.schema_version", "bigint")
    rules.append((version.isNull() | ~version.isin(*sorted(SUPPORTED_VERSIONS)), ErrorCode.UNSUPPORTED_VERSION,
                  F.concat(F.lit("schema_version "), F.to_json(_field("schema_version")), F.lit(" is not supported"))))
    for name in ("transaction_id", "customer_id", "merchant_id"):
        rules.append((~text[name].rlike(_whole(ID_PATTERN.pattern)), ErrorCode.INVALID_ID,
                      F.concat(F.lit(f"{name} "), _quoted(text[name], 80), F.lit(" is not a valid id"))))
    shown = F.to_json(_field("amount"))
    rules += [
        (F.isnan(amount) | (F.abs(amount) == float("inf")), ErrorCode.NON_FINITE_AMOUNT,
         F.concat(F.lit("amount "), shown, F.lit(" is not finite"))),
        (amount <= 0, ErrorCode.NON_POSITIVE_AMOUNT, F.concat(F.lit("amount "), shown, F.lit(" must be positive"))),
        (amount > MAX_AMOUNT, ErrorCode.AMOUNT_TOO_LARGE,
         F.concat(F.lit("amount "), shown, F.lit(f" exceeds {MAX_AMOUNT:,.0f}"))),
        (~text["currency"].rlike(_whole(CURRENCY_PATTERN.pattern)), ErrorCode.INVALID_CURRENCY,
         F.concat(F.lit("currency "), _quoted(text["currency"], 20), F.lit(" is not ISO 4217"))),
        (moment.isNull(), ErrorCode.INVALID_TIMESTAMP,
         F.concat(F.lit("event_time "), _quoted(text["event_time"], 60), F.lit(" is not ISO 8601 with an offset"))),
        (moment > now + F.expr(f"INTERVAL {int(MAX_FUTURE.total_seconds())} SECONDS"), ErrorCode.FUTURE_TIMESTAMP,
         F.concat(F.lit("event_time "), F.date_format(moment, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"),
                  F.lit(" is in the future"))),
        (moment < F.timestamp_seconds(F.lit(int(EARLIEST_EVENT_TIME.timestamp()))), ErrorCode.STALE_TIMESTAMP,
         F.concat(F.lit("event_time "), F.date_format(moment, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"), F.lit(" is too old"))),
        (~text["merchant_category"].isin(*MERCHANT_CATEGORIES), ErrorCode.INVALID_CATEGORY,
         F.concat(F.lit("merchant_category "), _quoted(text["merchant_category"], 40), F.lit(" is unknown"))),
        (~text["channel"].isin(*CHANNELS), ErrorCode.INVALID_CHANNEL,
         F.concat(F.lit("channel "), _quoted(text["channel"], 40), F.lit(" is unknown"))),
    ]
    return rules


def _first(rules: list[tuple[Column, ErrorCode, Column]], pick: int) -> Column:
    """CASE WHEN over the rules in order: the first broken rule's code (pick 1) or message (pick 2)."""
    def add(case: Column | None, rule: tuple[Column, ErrorCode, Column]) -> Column:
        result = F.lit(rule[1].value) if pick == 1 else rule[2]
        return F.when(rule[0], result) if case is None else case.when(rule[0], result)
    case = reduce(add, rules, None)
    assert case is not None
    return case


def parse(raw: DataFrame, now: Column | None = None) -> DataFrame:
    """Kafka rows (topic, partition, offset, key, value) -> ``PARSED_COLUMNS`` rows.

    ``now`` is the clock of the future-time rule: the batch's ``current_timestamp()`` unless given.
    """
    now = F.current_timestamp() if now is None else now
    for key, setting in VARIANT_SESSION_CONF.items():
        raw.sparkSession.conf.set(key, setting)
    text = F.col("value").cast("string")
    event_time = F.try_variant_get(F.col("_document"), "$.event_time", "string")
    staged = (
        raw.select("topic", "partition", "offset", "key", "value")
        .withColumn("_document", F.coalesce(
            F.try_parse_json(text),
            F.try_parse_json(F.regexp_replace(text, _NON_FINITE, "1e400"))))
        .withColumn("_keys", F.array_distinct(F.map_keys(F.expr("try_cast(_document AS MAP<STRING, VARIANT>)"))))
        .withColumn("_event_time", F.when(
            (F.length(event_time) >= 10) & (F.length(event_time) <= 40)
            & event_time.rlike(_whole(EVENT_TIME_PATTERN.pattern)),
            F.regexp_replace(event_time, _NO_SECONDS, "$1:00").try_cast("timestamp")))
    )
    rules = _rules(now)
    judged = staged.withColumn("error_code", _first(rules, 1))  # one column: computed once per record
    rejected = F.col("error_code").isNotNull()
    document = F.col("_document")

    def if_valid(column: Column) -> Column:
        return F.when(~rejected, column)

    def if_rejected(name: str) -> Column:
        return F.when(rejected, F.col(name)).alias(name)

    return judged.select(
        if_rejected("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("bigint").alias("offset"),
        if_rejected("key"),
        if_rejected("value"),
        "error_code",
        F.when(rejected, _first(rules, 2)).alias("error_message"),
        *(if_valid(F.try_variant_get(document, f"$.{name}", "string")).alias(name)
          for name in ("transaction_id", "customer_id")),
        if_valid(F.try_variant_get(document, "$.amount", "double")).alias("amount"),
        if_valid(F.try_variant_get(document, "$.currency", "string")).alias("currency"),
        if_valid(F.col("_event_time")).alias("event_time"),
        *(if_valid(F.try_variant_get(document, f"$.{name}", "string")).alias(name)
          for name in ("merchant_id", "merchant_category", "channel")),
    )
