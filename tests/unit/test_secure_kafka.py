"""Pure pieces of the secured test broker: its properties, the SCRAM argument, its certificates."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509

from activity_settings import KafkaSettings
from infra import secure_kafka
from infra.kafka_broker import render_properties, server_properties


def test_plain_values_are_written_as_they_are() -> None:
    text = server_properties(KafkaSettings(port=19092, controller_port=19093), Path("/data/kafka"))
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093\n" in text
    assert "log.dirs=/data/kafka\n" in text
    assert "\\" not in text


def test_values_are_escaped_as_java_properties_read_them() -> None:
    assert render_properties({"k": "line one\nline two\n"}) == "k=line one\\nline two\\n\n"
    assert render_properties({"k": "C:\\dir"}) == "k=C:\\\\dir\n"
    assert render_properties({"k": " lead"}) == "k=\\ lead\n"
    assert render_properties({"k": "é€😀"}) == "k=\\u00e9\\u20ac\\ud83d\\ude00\n"


def test_scram_credential_is_the_storage_tools_argument() -> None:
    assert (secure_kafka.scram_credential("SCRAM-SHA-512", "alice", "s3cret-pw")
            == "SCRAM-SHA-512=[name=alice,password=s3cret-pw]")


@pytest.mark.parametrize("username, password", [("al ice", "pw"), ("alice", "pa,ss"), ("alice", 'pa"ss'),
                                                ("alice", "pw]"), ("", "pw"), ("alice", "")])
def test_credentials_that_would_need_quoting_are_refused(username: str, password: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        secure_kafka.scram_credential("SCRAM-SHA-512", username, password)


def test_jaas_config_lists_the_user_only_for_plain() -> None:
    scram = secure_kafka.jaas_config("SCRAM-SHA-256", "alice", "pw")
    assert scram == 'org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="pw";'
    plain = secure_kafka.jaas_config("PLAIN", "alice", "pw")
    assert plain == ('org.apache.kafka.common.security.plain.PlainLoginModule required '
                     'username="alice" password="pw" user_alice="pw";')


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> secure_kafka.TlsFiles:
    return secure_kafka.make_tls(tmp_path_factory.mktemp("tls"))


def test_the_server_certificate_is_for_loopback_and_signed_by_the_ca(tls: secure_kafka.TlsFiles) -> None:
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    server, issuer = x509.load_pem_x509_certificates(tls.chain.read_bytes())
    assert issuer == ca
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert tls.key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert tls.key.stat().st_mode & 0o077 == 0


def test_secured_properties_swap_the_client_listener_for_sasl_ssl(tls: secure_kafka.TlsFiles) -> None:
    kafka = KafkaSettings(port=29092, controller_port=29093)
    props = secure_kafka.secured_properties(kafka, Path("/data"), tls, "SCRAM-SHA-512", "alice", "pw")
    assert props["listeners"] == "SASL_SSL://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:29092"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert 'username="alice"' in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert props["ssl.keystore.certificate.chain"].count("BEGIN CERTIFICATE") == 2
    assert props["ssl.truststore.certificates"] == tls.ca.read_text()
    assert props["log.dirs"] == "/data" and props["process.roles"] == "broker,controller"  # the embedded base
    text = render_properties(props)
    assert "PLAINTEXT://" not in text
    assert len(text.splitlines()) == len(props)  # each PEM value on its one line


def test_the_update_points_kafka_settings_at_the_broker(tls: secure_kafka.TlsFiles) -> None:
    broker = secure_kafka.SecuredBroker(bootstrap="127.0.0.1:29092", tls=tls, mechanism="SCRAM-SHA-512",
                                        username="alice", password="pw", paths=None, process=None)  # type: ignore[arg-type]
    kafka = broker.kafka_settings(KafkaSettings(partitions=2), sasl_password="other")
    assert not kafka.embedded and kafka.partitions == 2
    config = kafka.client_config()
    assert config.pop("logger").name == "activity.kafka.client" and config.pop("log_level") == 3
    assert config == {
        "bootstrap.servers": "127.0.0.1:29092", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice", "sasl.password": "other", "ssl.ca.location": str(tls.ca)}
