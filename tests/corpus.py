"""A corpus of malformed transactions, each with the rejection code the contract gives it."""

from __future__ import annotations

import json

from streaming.schema import MAX_PAYLOAD_BYTES, ErrorCode, example_event


def _event(**changes: object) -> dict[str, object]:
    document = example_event()
    document["event_time"] = "2026-02-01T10:00:00Z"
    document.update(changes)
    return document


def _without(name: str) -> dict[str, object]:
    document = _event()
    del document[name]
    return document


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


def malformed(tag: str) -> list[tuple[str, bytes, ErrorCode]]:
    """(name, value, expected code); ids carry ``tag`` so that every run has its own."""

    def ev(i: int, **changes: object) -> dict[str, object]:
        return _event(transaction_id=f"bad-{tag}-{i}", **changes)

    def v1(i: int, **changes: object) -> dict[str, object]:  # the first contract: no kind, amounts > 0
        document = {k: v for k, v in ev(i).items() if k != "kind"} | {"schema_version": 1}
        return document | changes

    cases: list[tuple[str, bytes, ErrorCode]] = [
        ("invalid json", b'{"schema_version": 1, "amount": ', ErrorCode.INVALID_JSON),
        ("plain text", b"hello kafka", ErrorCode.INVALID_JSON),
        ("empty value", b"", ErrorCode.INVALID_JSON),
        ("json array", b"[1, 2, 3]", ErrorCode.NOT_AN_OBJECT),
        ("json number", b"42", ErrorCode.NOT_AN_OBJECT),
        ("invalid utf-8", b'{"customer_id": "\xc3\x28"}', ErrorCode.INVALID_ENCODING),
        ("oversized", _json(ev(1, merchant_id="m" * (MAX_PAYLOAD_BYTES + 10))), ErrorCode.PAYLOAD_TOO_LARGE),
        ("missing amount", _json({k: v for k, v in ev(2).items() if k != "amount"}), ErrorCode.MISSING_FIELD),
        ("missing customer", _json({k: v for k, v in ev(3).items() if k != "customer_id"}), ErrorCode.MISSING_FIELD),
        ("unknown field", _json(ev(4, loyalty_tier="gold")), ErrorCode.UNKNOWN_FIELD),
        ("amount as string", _json(ev(5, amount="12.50")), ErrorCode.WRONG_TYPE),
        ("customer as number", _json(ev(6, customer_id=12345)), ErrorCode.WRONG_TYPE),
        ("null channel", _json(ev(7, channel=None)), ErrorCode.WRONG_TYPE),
        ("boolean amount", _json(ev(8, amount=True)), ErrorCode.WRONG_TYPE),
        ("future schema version", _json(ev(9, schema_version=7)), ErrorCode.UNSUPPORTED_VERSION),
        ("NaN amount", _json(ev(10)).replace(b'"amount": 42.5', b'"amount": NaN'), ErrorCode.NON_FINITE_AMOUNT),
        ("infinite amount", _json(ev(11)).replace(b'"amount": 42.5', b'"amount": Infinity'),
         ErrorCode.NON_FINITE_AMOUNT),
        ("negative purchase", _json(ev(12, amount=-20.0)), ErrorCode.AMOUNT_SIGN),
        ("zero amount in version 1", _json(v1(13, amount=0)), ErrorCode.NON_POSITIVE_AMOUNT),
        ("refund in version 1", _json(v1(23, amount=-20.0)), ErrorCode.NON_POSITIVE_AMOUNT),
        ("kind in version 1", _json(v1(24, kind="refund")), ErrorCode.UNKNOWN_FIELD),
        ("positive refund", _json(ev(25, kind="refund", amount=5.0)), ErrorCode.AMOUNT_SIGN),
        ("unknown kind", _json(ev(26, kind="chargeback")), ErrorCode.INVALID_KIND),
        ("huge refund", _json(ev(27, kind="reversal", amount=-5e9)), ErrorCode.AMOUNT_TOO_LARGE),
        ("huge amount", _json(ev(14, amount=5e9)), ErrorCode.AMOUNT_TOO_LARGE),
        ("lower-case currency", _json(ev(15, currency="eur")), ErrorCode.INVALID_CURRENCY),
        ("unparseable time", _json(ev(16, event_time="last tuesday")), ErrorCode.INVALID_TIMESTAMP),
        ("time without offset", _json(ev(17, event_time="2026-02-01T10:00:00")), ErrorCode.INVALID_TIMESTAMP),
        ("far-future time", _json(ev(18, event_time="2099-01-01T00:00:00Z")), ErrorCode.FUTURE_TIMESTAMP),
        ("before 1970", _json(ev(19, event_time="1969-12-31T23:59:59Z")), ErrorCode.STALE_TIMESTAMP),
        ("bad id characters", _json(ev(20, customer_id="c 1; DROP TABLE")), ErrorCode.INVALID_ID),
        ("unknown category", _json(ev(21, merchant_category="casino")), ErrorCode.INVALID_CATEGORY),
        ("unknown channel", _json(ev(22, channel="carrier pigeon")), ErrorCode.INVALID_CHANNEL),
    ]
    return cases
