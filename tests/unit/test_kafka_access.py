"""Refusals by a Kafka cluster become errors that name the settings to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from activity_settings import KafkaSettings
from infra.kafka_access import ClientErrors, KafkaAccessError

KAFKA = KafkaSettings(bootstrap_servers="kafka:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_username="activity", sasl_password="the-secret", ssl_ca_location=Path("/etc/ca.pem"))


def test_a_refused_login_names_the_credential_settings_but_not_the_password() -> None:
    errors = ClientErrors(KAFKA)
    errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    errors.check()  # not a refusal: the caller keeps waiting
    errors(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials"))
    errors(KafkaError(KafkaError._SSL, "later"))
    with pytest.raises(KafkaException) as caught:
        errors.check()
    error = caught.value
    assert isinstance(error, KafkaAccessError) and error.refused
    assert error.args[0].code() == KafkaError._AUTHENTICATION  # the first refusal
    message = str(error)
    assert "kafka.sasl_username" in message and "kafka.sasl_password" in message
    assert "ACTIVITY_KAFKA__SASL_PASSWORD" in message and "'activity'" in message and "kafka:9093" in message
    assert "invalid credentials" in message and "the-secret" not in message


def test_a_failed_handshake_names_the_ca_setting() -> None:
    errors = ClientErrors(KAFKA)
    errors(KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed"))
    with pytest.raises(KafkaAccessError, match=r"kafka\.ssl_ca_location \(/etc/ca\.pem\).*certificate verify"):
        errors.check()


def test_a_timeout_is_not_a_refusal() -> None:
    error = KafkaAccessError("does not answer", KafkaError._TRANSPORT)
    assert not error.refused and str(error) == "does not answer"
