"""Failing within seconds, in one line, when a service a command needs does not listen.

A client left to find out alone takes long and says little: librdkafka retries a refused connection
forever, MLflow's REST client retries for minutes, a Redis or PostgreSQL client waits out its own
timeouts; none of them names the setting that points at the service or the command that starts it.
A command asks here first: one TCP connection to each address the setting names (seconds at most),
and a ``ServiceUnavailable`` naming the setting, its environment variable and the fix when none answers.
A service that listens but refuses us (credentials, TLS) is left to the client's own checks.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from activity_settings import (
    ENV_PREFIX,
    ActivityError,
    FeatureStoreSettings,
    KafkaSettings,
    MlflowSettings,
    ServingSettings,
)

COMPOSE = "docker compose -f infra/compose/docker-compose.yml"
_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}


class ServiceUnavailable(ActivityError, RuntimeError):
    """A service a command needs does not listen; the message names the setting and what starts it."""


@dataclass(frozen=True)
class Requirement:
    """A service at ``addresses`` (host, port), configured by ``setting``; ``fix`` says how to start it."""

    service: str
    addresses: tuple[tuple[str, int], ...]
    setting: str
    fix: str  # ends in "... or correct": the message goes on with "setting <name> (env <variable>)"

    @property
    def where(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.addresses)


def env_name(setting: str) -> str:
    """``kafka.bootstrap_servers`` -> ``ACTIVITY_KAFKA__BOOTSTRAP_SERVERS``."""
    return ENV_PREFIX + setting.upper().replace(".", "__")


def connect_failure(host: str, port: int, timeout_s: float) -> str | None:
    """Why a TCP connection to ``host:port`` fails (e.g. "connection refused"), None when it succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()


def require(requirement: Requirement, timeout_s: float = 3.0) -> None:
    """Return when one of the addresses accepts a connection; else raise ``ServiceUnavailable``."""
    reasons: list[str] = []
    for host, port in requirement.addresses:
        reason = connect_failure(host, port, timeout_s)
        if reason is None:
            return
        reasons.append(reason if len(requirement.addresses) == 1 else f"{host}:{port}: {reason}")
    raise ServiceUnavailable(
        f"{requirement.service} at {requirement.where} does not answer ({'; '.join(reasons)}): {requirement.fix} "
        f"setting {requirement.setting} (env {env_name(requirement.setting)})")


def _host_port(server: str, default_port: int | None = None) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    if not host and default_port is not None:
        return port, default_port
    return host.strip("[]"), int(port)


def kafka_requirement(kafka: KafkaSettings) -> Requirement:
    """The broker: the embedded one on kafka.host:kafka.port unless kafka.bootstrap_servers names a cluster."""
    if kafka.bootstrap_servers is None:  # kafka.embedded
        return Requirement("Kafka", ((kafka.host, kafka.port),), "kafka.bootstrap_servers",
                           "start the embedded broker with `activity stack up`, or name a running cluster in")
    servers = tuple(_host_port(server) for server in kafka.bootstrap_servers.split(","))
    return Requirement("Kafka", servers, "kafka.bootstrap_servers",
                       f"start the cluster it names (the compose stack's: `{COMPOSE} up -d kafka`) or correct")


def redis_requirement(store: FeatureStoreSettings) -> Requirement | None:
    """Feast's Redis online store, when that is the online store (SQLite needs no server)."""
    if store.online_store != "redis":
        return None
    first = store.redis_connection_string.split(",")[0]
    return Requirement("Redis (the Feast online store)", (_host_port(first, 6379),),
                       "feature_store.redis_connection_string",
                       f"start it (`redis-server --port N`, or `{COMPOSE} up -d redis`) or correct")


def mlflow_requirement(mlflow: MlflowSettings) -> Requirement | None:
    """The MLflow tracking server or its database, when mlflow.tracking_uri names one (SQLite needs none)."""
    uri = mlflow.tracking_uri
    if not uri:
        return None
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if not parts.hostname or scheme not in _DEFAULT_PORTS:
        return None
    address = ((parts.hostname, parts.port or _DEFAULT_PORTS[scheme]),)
    if scheme in ("http", "https"):
        return Requirement("the MLflow registry", address, "mlflow.tracking_uri",
                           f"start it (`mlflow server --port {address[0][1]}`, or `{COMPOSE} up -d mlflow`) "
                           "or correct")
    name = "PostgreSQL" if scheme.startswith("postgres") else scheme
    return Requirement(f"{name} (the MLflow store)", address, "mlflow.tracking_uri",
                       f"start it (`{COMPOSE} up -d {'postgres' if name == 'PostgreSQL' else scheme}`) or correct")


def triton_requirement(serving: ServingSettings) -> Requirement | None:
    """Triton Inference Server, when the champion runs there (``serving.model_server: triton``).

    Only at start: once the scorer runs, a Triton that goes away is its fallback's business
    (the in-process copy answers, degraded), not a reason to stop.
    """
    if serving.model_server != "triton":
        return None
    if serving.triton_url is None:
        return Requirement("Triton Inference Server", (("127.0.0.1", serving.triton_port),), "serving.triton_url",
                           "start the embedded one with `activity stack up`, or name a running Triton in")
    parts = urlsplit(serving.triton_url)
    address = ((parts.hostname or "", parts.port or _DEFAULT_PORTS[parts.scheme]),)
    return Requirement("Triton Inference Server", address, "serving.triton_url",
                       f"start it (`{COMPOSE} up -d triton`) or correct")


def require_all(*requirements: Requirement | None, timeout_s: float = 3.0) -> None:
    """``require`` each requirement that applies (None: the setting needs no server), in order."""
    for requirement in requirements:
        if requirement is not None:
            require(requirement, timeout_s)
