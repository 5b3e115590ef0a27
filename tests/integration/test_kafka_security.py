"""The platform's Kafka clients against a secured broker: SASL_SSL with SCRAM-SHA-512 and a private CA.

A throwaway broker (``infra/secure_kafka.py``) on free ports, then what the cluster profile's Kafka settings
must do: create the topics (librdkafka admin), publish simulated and malformed events (librdkafka producer),
stream them (Spark's Java Kafka client with ``spark_kafka_options``) into Feast and the DLQ, and read the DLQ
back (librdkafka consumer). Wrong credentials, a wrong CA and a plaintext client fail promptly, by name.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from activity_settings import Settings
from tests.conftest import free_port, stack_settings
from tests.corpus import malformed
from tests.integration.conftest import isolated

if TYPE_CHECKING:
    from infra.secure_kafka import SecuredBroker
    from streaming.runner import StreamSummary

pytestmark = pytest.mark.integration
USER, PASSWORD, WRONG = "activity", "activity-secret", "not-the-secret"
CUSTOMERS, DAYS = 300, 4  # 2026-01-01 .. 2026-01-04


@dataclass(frozen=True)
class Streamed:
    broker: SecuredBroker
    settings: Settings
    valid_events: int
    corpus: list
    summary: StreamSummary


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Streamed]:
    """Topics, a publish and one stream run, all over SASL_SSL."""
    from infra.secure_kafka import secured_broker
    from streaming.publish import encode_simulated, publish_tables
    from streaming.runner import run_stream
    from streaming.simulator import make_population, simulate

    root = tmp_path_factory.mktemp("kafka-security")
    with secured_broker(root / "broker", free_port(), free_port(), USER, PASSWORD, "SCRAM-SHA-512") as broker:
        base = stack_settings(root / "data")
        settings = isolated(base.model_copy(update={"kafka": broker.kafka_settings(base.kafka)}), root / "data")
        tables = list(simulate(make_population(CUSTOMERS, date(2026, 1, 1), DAYS, seed=17)))
        report = publish_tables(settings.kafka, tables, encode_simulated)
        valid_events = sum(table.num_rows for table in tables)
        assert (report.delivered, report.failed, report.undelivered) == (valid_events, 0, 0)
        corpus = malformed("secured")[:8]
        assert send_raw(settings, [value for _, value, _ in corpus]) == len(corpus)
        summary = run_stream(settings, until_idle_s=2.0)
        yield Streamed(broker, settings, valid_events, corpus, summary)
        gc.collect()  # the failure tests' clients, kept by their tracebacks, go while the broker still answers


def send_raw(settings: Settings, values: list[bytes]) -> int:
    """Publish ``values`` as they are (keyed ``bad``) with the platform's producer; return how many were delivered."""
    from streaming.producer import TransactionPublisher

    publisher = TransactionPublisher(settings.kafka, settings.kafka.topics.transactions)
    publisher.publish(values, [b"bad"] * len(values))
    return publisher.close(30).delivered


def test_the_broker_runs_one_sasl_ssl_listener_with_scram_and_pem_tls(streamed: Streamed) -> None:
    logged = {line.strip() for line in (streamed.broker.paths.log).read_text().splitlines()}
    port = streamed.broker.bootstrap.rpartition(":")[2]
    assert f"advertised.listeners = [SASL_SSL://127.0.0.1:{port}]" in logged
    assert "listener.security.protocol.map = CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL" in logged
    assert {"sasl.enabled.mechanisms = [SCRAM-SHA-512]", "ssl.keystore.type = PEM",
            "ssl.keystore.key = [hidden]"} <= logged


def test_the_stream_consumes_every_valid_event_over_sasl_ssl(streamed: Streamed) -> None:
    from features.store import FeatureWriter, online_features
    from streaming.paths import StreamPaths

    settings = streamed.settings
    assert streamed.summary.caught_up
    assert streamed.summary.input_rows == streamed.valid_events + len(streamed.corpus)
    paths = StreamPaths.of(settings)
    progress = [json.loads(line) for line in paths.progress.read_text().splitlines()]
    assert sum(p["valid"] - p["duplicates"] for p in progress) == streamed.valid_events
    archive = pd.read_parquet(paths.archive, columns=["transaction_id", "customer_id"])
    assert len(archive) == streamed.valid_events and archive["transaction_id"].is_unique
    counts = archive.groupby("customer_id").size()
    customers = list(counts.index[:100])
    as_of = int(pd.Timestamp("2026-01-06", tz="UTC").timestamp())  # every event is within the last 7 days
    online = online_features(FeatureWriter.open(settings).store, customers, [as_of] * len(customers))
    assert list(online["tx_count_7d"]) == [counts[cid] for cid in online["customer_id"]]


def test_malformed_events_reach_the_dead_letter_topic_and_read_back_over_sasl_ssl(streamed: Streamed) -> None:
    from streaming.consume import read_topic

    kafka = streamed.settings.kafka
    letters = list(read_topic(kafka, kafka.topics.dlq, idle_timeout_s=3))
    by_value = {record.value: record.header("error_code") for record in letters}
    assert len(letters) == len(streamed.corpus)
    for name, value, code in streamed.corpus:
        assert by_value.get(value) == code.value, name


def _prompt(call: Callable[[], object], seconds: float = 8.0) -> Exception:
    """The exception ``call`` raises, asserting it came within ``seconds`` (not after a client timeout)."""
    started = time.monotonic()
    with pytest.raises(Exception) as caught:  # the type is asserted by the caller
        call()
    assert time.monotonic() - started < seconds, f"took {time.monotonic() - started:.1f}s: {caught.value}"
    return caught.value


def test_a_wrong_password_fails_promptly_naming_the_credential_settings(streamed: Streamed) -> None:
    from infra.kafka_access import KafkaAccessError
    from infra.topics import ensure_topics
    from streaming.publish import encode_simulated, publish_tables
    from streaming.runner import StreamError, run_stream
    from streaming.simulator import make_population, simulate

    wrong = streamed.settings.model_copy(update={
        "kafka": streamed.broker.kafka_settings(streamed.settings.kafka, sasl_password=WRONG)})
    tables = list(simulate(make_population(20, date(2026, 1, 1), 2, seed=3)))
    failures = {
        "admin": _prompt(lambda: ensure_topics(wrong.kafka)),
        "producer": _prompt(lambda: publish_tables(wrong.kafka, tables, encode_simulated)),
        "stream": _prompt(lambda: run_stream(wrong, until_idle_s=1.0)),
    }
    for client, error in failures.items():
        assert isinstance(error, StreamError if client == "stream" else KafkaAccessError), (client, error)
        message = str(error)
        assert "kafka.sasl_username" in message and "kafka.sasl_password" in message, (client, message)
        assert USER in message and WRONG not in message, (client, message)
        assert "invalid credentials" in message, (client, message)


def test_an_untrusted_certificate_fails_promptly_naming_the_ca_setting(streamed: Streamed, tmp_path: Path) -> None:
    from infra.kafka_access import KafkaAccessError
    from infra.secure_kafka import make_tls
    from infra.topics import ensure_topics

    other_ca = make_tls(tmp_path / "other").ca
    kafka = streamed.broker.kafka_settings(streamed.settings.kafka, ssl_ca_location=other_ca)
    error = _prompt(lambda: ensure_topics(kafka))
    assert isinstance(error, KafkaAccessError)
    assert "kafka.ssl_ca_location" in str(error) and "certificate verify failed" in str(error)


def test_a_plaintext_client_on_the_sasl_ssl_port_fails_within_its_timeout(streamed: Streamed) -> None:
    from infra.kafka_access import KafkaAccessError
    from infra.topics import ensure_topics

    plaintext = streamed.settings.kafka.model_copy(update={
        "security_protocol": "PLAINTEXT", "sasl_mechanism": None, "sasl_username": None, "sasl_password": None,
        "ssl_ca_location": None})
    error = _prompt(lambda: ensure_topics(plaintext, timeout_s=3.0))
    assert isinstance(error, KafkaAccessError) and not error.refused
    assert "kafka.security_protocol" in str(error) and "PLAINTEXT" in str(error)
