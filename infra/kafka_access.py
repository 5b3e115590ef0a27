"""Failing fast, and by name, when a Kafka cluster refuses our clients.

librdkafka retries a refused login or TLS handshake forever and tells only its ``error_cb`` (and
its log): a metadata request waits out its whole timeout and then says "Broker transport failure",
a producer's flush waits out its timeout with every message undelivered. The platform's clients
pass a ``ClientErrors`` as their ``error_cb`` and stop at the first refusal, with a message that
names the settings to fix.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from activity_settings import ActivityError, KafkaSettings

# Errors no retry cures: the credentials or the certificate are wrong until someone changes a setting.
REFUSALS = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})
_TIMEOUTS = frozenset({KafkaError._TRANSPORT, KafkaError._TIMED_OUT})


class KafkaAccessError(ActivityError, KafkaException):
    """The cluster refused us or did not answer; the message names the settings to check.

    A ``KafkaException`` (whose ``args[0]`` is a ``KafkaError`` with the code) so that every handler
    of Kafka failures, the CLI's included, reports it as it is.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(KafkaError(code, message))
        self.message = message

    @property
    def refused(self) -> bool:
        return self.args[0].code() in REFUSALS

    def __str__(self) -> str:
        return self.message


def refusal_message(kafka: KafkaSettings, error: KafkaError) -> str:
    """What a refusal means in our settings' terms, followed by librdkafka's own reason."""
    if error.code() == KafkaError._AUTHENTICATION:
        return (f"Kafka at {kafka.bootstrap} refused the login of user {kafka.sasl_username!r} "
                f"({kafka.sasl_mechanism}): check settings kafka.sasl_username and kafka.sasl_password "
                "(env ACTIVITY_KAFKA__SASL_USERNAME, ACTIVITY_KAFKA__SASL_PASSWORD) and kafka.sasl_mechanism. "
                f"The client said: {error.str()}")
    ca = kafka.ssl_ca_location or "unset: the system's CAs"
    return (f"the TLS handshake with Kafka at {kafka.bootstrap} failed: check settings kafka.ssl_ca_location "
            f"({ca}) and kafka.security_protocol ({kafka.security_protocol}). The client said: {error.str()}")


class ClientErrors:
    """A librdkafka ``error_cb`` that keeps the first refusal and the latest error, for ``check``.

    librdkafka calls it from ``poll``/``flush``/``consume`` on the caller's thread (an admin client's
    ``list_topics`` does not: call ``poll(0)`` after it).
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.refusal: KafkaError | None = None
        self.last: KafkaError | None = None

    def __call__(self, error: KafkaError) -> None:
        self.last = error
        if self.refusal is None and error.code() in REFUSALS:
            self.refusal = error

    def check(self) -> None:
        """Raise ``KafkaAccessError`` once the cluster has refused us."""
        if self.refusal is not None:
            raise KafkaAccessError(refusal_message(self.kafka, self.refusal), self.refusal.code())


def admin_client(kafka: KafkaSettings) -> tuple[AdminClient, ClientErrors]:
    """An admin client with a ``ClientErrors``, for ``cluster_metadata``."""
    errors = ClientErrors(kafka)
    config: dict[str, Any] = {**kafka.client_config(), "error_cb": errors}
    return AdminClient(config), errors


def cluster_metadata(admin: AdminClient, errors: ClientErrors, timeout_s: float) -> ClusterMetadata:
    """``admin.list_topics`` asked in one-second steps, so that a refusal surfaces within about a second.

    Raises ``KafkaAccessError``: naming the credentials or the CA when the cluster refused us, naming
    the address and the security protocol when it did not answer within ``timeout_s``.
    """
    kafka = errors.kafka
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            if exc.args[0].code() not in _TIMEOUTS:
                raise
            admin.poll(0)  # serves error_cb
            errors.check()
            if time.monotonic() >= deadline:
                last = errors.last.str() if errors.last is not None else exc.args[0].str()
                raise KafkaAccessError(
                    f"Kafka at {kafka.bootstrap} does not answer a metadata request over "
                    f"{kafka.security_protocol} within {timeout_s:.0f}s: check settings kafka.bootstrap_servers "
                    "and kafka.security_protocol (a plaintext client on a TLS listener, or the reverse, looks "
                    f"like this). The client said: {last}", exc.args[0].code()) from None
