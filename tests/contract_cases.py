"""Records for the contract's two validators to agree on: the malformed corpus, edge cases, valid events, fuzz."""

from __future__ import annotations

import json
import random

from streaming.schema import example_event
from tests.corpus import malformed

# Values each field may be swapped for in the fuzzed records: every JSON type, and the near misses of each rule.
_TRICKY: tuple[object, ...] = (
    None, True, False, 0, 1, 2, 3, -1, 1.0, 2.0, 0.0, -0.0, 1.5, -20.0, 42.5, 1e6, 1000000.5, -1e6, 5e9, -5e9,
    12345678.25, 1e-5, 10**20, "", "a", "x" * 65, "x" * 64, "c 1", "c\n1", "it's", 'say "hi"', "é", "EUR", "eur",
    "EURO", "grocery", "casino", "online", "in_store", "purchase", "refund", "reversal", "chargeback",
    "2026-02-01T10:00:00Z", "2026-02-01T10:00Z", "2026-02-01 10:00:00+05:30", "2026-02-01T10:00:00.123456789Z",
    "2026-02-01T10:00+19:00", "2026-02-01T10:00+05:60", "2026-02-01T10:00+23:60", "2026-02-01T10:00:60Z",
    "2026-02-01T24:00Z", "2026-02-30T10:00Z", "2026-02-01T10:00:00", "0000-01-01T00:00Z", "0001-01-01T00:00Z",
    "1969-12-31T23:59:59.999Z", "1970-01-01T00:00Z", "2099-01-01T00:00Z", "2026-2-1T10:00Z", [1], {"a": 1},
)


def edge_cases(tag: str) -> list[tuple[str, bytes]]:
    """Named values beyond the corpus: JSON's corners and the time format's."""

    def event(**changes: object) -> dict[str, object]:
        document = example_event() | {"event_time": "2026-02-01T10:00:00Z", "transaction_id": f"edge-{tag}"}
        return document | changes

    def text(document: object) -> bytes:
        return json.dumps(document).encode()

    plain = text(event())
    return [
        ("duplicate key, last wins", plain[:-1] + b', "amount": -3.0}'),
        ("float version", text(event(schema_version=2.0))),
        ("huge version", text(event(schema_version=10**20))),
        ("negative infinity", plain.replace(b'"amount": 42.5', b'"amount": -Infinity')),
        ("NaN channel", plain.replace(b'"channel": "in_store"', b'"channel": NaN')),
        ("overflowing amount", plain.replace(b'"amount": 42.5', b'"amount": 1e999')),
        ("nested amount", text(event(amount={"value": 1}))),
        ("array id", text(event(customer_id=["c1"]))),
        ("two missing", text({k: v for k, v in event().items() if k not in ("amount", "kind")})),
        ("two unknown in version 1",
         text({k: v for k, v in event(schema_version=1, zeta=1, alpha=2).items() if k != "kind"})),
        ("unknown and missing", text({k: v for k, v in event(extra=1).items() if k != "channel"})),
        ("zero purchase", text(event(amount=0))),
        ("zero refund", text(event(kind="refund", amount=0.0))),
        ("reversal", text(event(kind="reversal", amount=-12.25))),
        ("integer amount", text(event(amount=7))),
        ("version 1", text({k: v for k, v in event(schema_version=1).items() if k != "kind"})),
        ("space separator", text(event(event_time="2026-02-01 10:00:00.5+01:00"))),
        ("nine fraction digits", text(event(event_time="2026-02-01T10:00:00.123456789-03:30"))),
        ("offset +19:00", text(event(event_time="2026-02-01T10:00+19:00"))),
        ("offset +05:60", text(event(event_time="2026-02-01T10:00+05:60"))),
        ("offset +23:60", text(event(event_time="2026-02-01T10:00+23:60"))),
        ("second 60", text(event(event_time="2026-02-01T10:00:60Z"))),
        ("hour 24", text(event(event_time="2026-02-01T24:00Z"))),
        ("30 February", text(event(event_time="2026-02-30T10:00Z"))),
        ("year 0", text(event(event_time="0000-01-01T00:00Z"))),
        ("year 1", text(event(event_time="0001-01-01T00:00Z"))),
        ("the epoch", text(event(event_time="1970-01-01T00:00:00Z"))),
        ("just before the epoch", text(event(event_time="1969-12-31T23:59:59.999999Z"))),
        ("quote in an id", text(event(merchant_id="it's"))),
        ("unicode category", text(event(merchant_category="épicerie"))),
        ("whitespace around", b"  " + plain + b"\n"),
        ("json null", b"null"),
        ("json string", b'"text"'),
        ("json true", b"true"),
        ("null value", None),  # type: ignore[list-item]
    ]


def fuzzed(tag: str, count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """``count`` events with one to three fields swapped for tricky values, dropped, or added."""
    rng = random.Random(seed)
    names = [*example_event(), "schema_version", "loyalty"]
    records = []
    for i in range(count):
        document = example_event() | {"event_time": "2026-02-01T10:00:00Z", "transaction_id": f"fuzz-{tag}-{i}"}
        if rng.random() < 0.3:
            document = {k: v for k, v in document.items() if k != "kind"} | {"schema_version": 1}
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(names)
            roll = rng.random()
            if roll < 0.1:
                document.pop(name, None)
            else:
                document[name] = rng.choice(_TRICKY)
        records.append((f"fuzz {i}", json.dumps(document).encode()))
    return records


def all_records(tag: str, fuzz: int = 3000) -> list[tuple[str, bytes | None]]:
    return [*((name, value) for name, value, _ in malformed(tag)), *edge_cases(tag), *fuzzed(tag, fuzz)]
