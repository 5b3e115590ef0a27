"""A throwaway Kafka broker whose client listener is SASL_SSL, to prove the platform's clients against one.

The cluster profile (``infra/profiles/cluster.yaml``) talks to a secured Kafka: ``kafka.security_protocol``
SASL_SSL, a SASL mechanism, credentials and a CA. This broker is the same single KRaft node as the embedded
one (``infra/kafka_broker.py``: same jars, same version, same base settings), with

- one client listener, ``SASL_SSL`` on 127.0.0.1, which also carries the broker's own (inter-broker) client;
- TLS from a CA made here with ``cryptography``: a server certificate for ``127.0.0.1``/``localhost`` signed by
  it, handed to the broker as PEM values (``ssl.keystore.type=PEM``), the CA written as the file clients trust;
- SCRAM credentials written into the metadata log by ``kafka-storage format --add-scram`` (SCRAM-SHA-256/512),
  or a PLAIN user in the listener's JAAS config;
- the controller listener PLAINTEXT on 127.0.0.1, as it never leaves the node.

Everything it owns lives in the given directory. It is for tests and local trials, never for data that
matters: the password sits in the broker's config and on the storage tool's command line. ``cryptography``
is imported only where the CA is made, the one place that needs it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from activity_settings import KafkaSettings
from infra.jars import fetch_jars
from infra.kafka_broker import (
    LOG4J2_XML,
    BrokerError,
    BrokerPaths,
    _format_storage,
    broker_properties,
    metadata_ready,
    min_heap,
    render_properties,
)
from infra.processes import port_taken, tail

HOST = "127.0.0.1"
LISTENER = "SASL_SSL"
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LOGIN_MODULES: dict[str, str] = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
# Credentials go, unquoted or in double quotes, into a JAAS line and the storage tool's --add-scram
# argument; neither has an escape we could rely on, so they are kept to characters that need none.
_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA clients trust, the broker's certificate chain (server, then CA) and its key."""

    ca: Path
    chain: Path
    key: Path


@dataclass(frozen=True)
class SecuredBroker:
    """A running secured broker: where it is and what a client needs to reach it."""

    bootstrap: str
    tls: TlsFiles
    mechanism: Mechanism
    username: str
    password: str
    paths: BrokerPaths
    process: subprocess.Popen[bytes]

    @property
    def ca_location(self) -> Path:
        """The CA certificate (PEM) a client trusts: setting ``kafka.ssl_ca_location``."""
        return self.tls.ca

    def kafka_update(self, **changes: Any) -> dict[str, Any]:
        """Fields for ``KafkaSettings.model_copy(update=...)``; ``changes`` override some (a wrong password)."""
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": self.mechanism,
            "sasl_username": self.username,
            "sasl_password": self.password,
            "ssl_ca_location": self.ca_location,
            **changes,
        }

    def kafka_settings(self, kafka: KafkaSettings, **changes: Any) -> KafkaSettings:
        """``kafka`` (its topics, partitions, ...) pointed at this broker with its credentials."""
        return kafka.model_copy(update=self.kafka_update(**changes))


def make_tls(directory: Path, days: int = 7) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it, as PEM files in ``directory``.

    A separate CA (rather than one self-signed server certificate) is what clients meet in a real cluster,
    and both the Java client and librdkafka verify the server's name against its subjectAltName.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(hours=1), now + dt.timedelta(days=days))

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("activity test CA")).issuer_name(name("activity test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca=directory / "ca.pem", chain=directory / "broker-chain.pem", key=directory / "broker-key.pem")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + files.ca.read_bytes())
    files.key.touch(mode=0o600)
    # Kafka's PEM key store reads unencrypted PKCS#8 only
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


def check_credential(username: str, password: str) -> None:
    for what, value in (("username", username), ("password", password)):
        if not _SAFE.match(value):
            raise ValueError(f"the secured broker's {what} must be letters, digits and . _ ~ - only, got {value!r}")


def scram_credential(mechanism: Mechanism, username: str, password: str) -> str:
    """The ``kafka-storage format --add-scram`` argument that creates ``username`` with ``password``."""
    check_credential(username, password)
    return f"{mechanism}=[name={username},password={password}]"


def jaas_config(mechanism: Mechanism, username: str, password: str) -> str:
    """The listener's JAAS line: the broker's own login and, for PLAIN, the one user it accepts."""
    check_credential(username, password)
    users = f' user_{username}="{password}"' if mechanism == "PLAIN" else ""
    return f'{LOGIN_MODULES[mechanism]} required username="{username}" password="{password}"{users};'


def secured_properties(kafka: KafkaSettings, data: Path, tls: TlsFiles, mechanism: Mechanism,
                       username: str, password: str) -> dict[str, str]:
    """The embedded broker's properties with the client listener swapped for SASL_SSL on ``kafka.port``."""
    props = broker_properties(kafka, data)
    client = f"{LISTENER}://{kafka.host}:{kafka.port}"
    props.update({
        "listeners": f"{client},CONTROLLER://{kafka.host}:{kafka.controller_port}",
        "advertised.listeners": client,
        "inter.broker.listener.name": LISTENER,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{LISTENER}:SASL_SSL",
        "sasl.enabled.mechanisms": mechanism,
        "sasl.mechanism.inter.broker.protocol": mechanism,
        f"listener.name.{LISTENER.lower()}.{mechanism.lower()}.sasl.jaas.config":
            jaas_config(mechanism, username, password),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": tls.chain.read_text(),
        "ssl.keystore.key": tls.key.read_text(),
        "ssl.truststore.type": "PEM",  # the broker's own client (inter-broker) trusts the CA
        "ssl.truststore.certificates": tls.ca.read_text(),
        "ssl.client.auth": "none",
    })
    return props


def start_secured_broker(
    directory: Path,
    port: int,
    controller_port: int,
    username: str,
    password: str,
    mechanism: Mechanism = "SCRAM-SHA-512",
    *,
    version: str = KafkaSettings.model_fields["broker_version"].default,
    heap: str = "512m",
    timeout_s: float = 60.0,
) -> SecuredBroker:
    """Start the broker in ``directory`` (a new one) and return once it answers an authenticated metadata request."""
    if mechanism not in LOGIN_MODULES:
        raise ValueError(f"mechanism must be one of {', '.join(LOGIN_MODULES)}, got {mechanism!r}")
    for what, taken in (("port", port), ("controller port", controller_port)):
        if port_taken(HOST, taken):
            raise BrokerError(f"{what} {HOST}:{taken} is taken by another process: choose a free one")
    paths = BrokerPaths.under(directory, version)
    if paths.data.exists():
        raise BrokerError(f"{paths.data} exists: a throwaway broker needs a new directory")
    jars = fetch_jars("kafka-broker", paths.jars, {"kafka.version": version})
    if not jars:
        raise BrokerError(f"no jars in {paths.jars}")
    classpath = str(paths.jars / "*")
    tls = make_tls(directory / "tls")
    kafka = KafkaSettings(host=HOST, port=port, controller_port=controller_port, partitions=4)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.config.touch(mode=0o600)  # it holds the key and the password
    paths.config.write_text(render_properties(secured_properties(kafka, paths.data, tls, mechanism,
                                                                 username, password)))
    paths.log4j.write_text(LOG4J2_XML.format(log=paths.log))
    scram = [scram_credential(mechanism, username, password)] if mechanism.startswith("SCRAM") else []
    _format_storage(paths, classpath, add_scram=scram)
    with paths.console.open("ab") as console:
        process = subprocess.Popen(
            ["java", f"-Xmx{heap}", f"-Xms{min_heap(heap)}", "-XX:+UseG1GC",
             "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={paths.log4j}",
             f"-Dkafka.logs.dir={paths.root}", "-cp", classpath, "kafka.Kafka", str(paths.config)],
            stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    broker = SecuredBroker(bootstrap=f"{HOST}:{port}", tls=tls, mechanism=mechanism,
                           username=username, password=password, paths=paths, process=process)
    client = broker.kafka_settings(kafka).client_config()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"the secured broker exited with {process.returncode} during start; last lines of "
                              f"{paths.console}:\n{tail(paths.console)}\n{paths.log}:\n{tail(paths.log)}")
        if metadata_ready(client, timeout_s=1.0):
            return broker
        time.sleep(0.2)
    stop_secured_broker(broker)
    raise BrokerError(f"the secured broker on {broker.bootstrap} did not answer an authenticated metadata request "
                      f"within {timeout_s:.0f}s; see {paths.log}:\n{tail(paths.log)}")


def stop_secured_broker(broker: SecuredBroker, timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; then remove its data, config and key (idempotent).

    The logs stay, for a failed test to be read.
    """
    process = broker.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(broker.paths.data, ignore_errors=True)
    broker.paths.config.unlink(missing_ok=True)
    broker.tls.key.unlink(missing_ok=True)


@contextmanager
def secured_broker(
    directory: Path,
    port: int,
    controller_port: int,
    username: str,
    password: str,
    mechanism: Mechanism = "SCRAM-SHA-512",
    **options: Any,
) -> Iterator[SecuredBroker]:
    """``start_secured_broker`` for the ``with`` block, stopped and cleaned up after it."""
    broker = start_secured_broker(directory, port, controller_port, username, password, mechanism, **options)
    try:
        yield broker
    finally:
        stop_secured_broker(broker)
