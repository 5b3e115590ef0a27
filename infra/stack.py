"""`activity stack up | down | status`: the local stack's lifecycle on the embedded default.

The stack is the Kafka broker (unless kafka.bootstrap_servers names a cluster), Triton Inference
Server when the scorer's model runs there (serving.model_server: triton, unless serving.triton_url
names an existing one; infra/triton.py) and, on request, a local Prometheus scraping the platform's
services (infra/observability.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from activity_settings import Settings
from infra.kafka_broker import BrokerPaths, metadata_ready, running_broker, start_broker, stop_broker
from infra.observability import (
    DEFAULT_PORT,
    PrometheusPaths,
    is_ready,
    running_prometheus,
    start_prometheus,
    stop_prometheus,
)
from infra.topics import ensure_topics
from infra.triton import TritonPaths, running_triton, start_triton, stop_triton
from infra.triton import is_ready as triton_ready


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    where: str
    detail: str


def stack_up(
    settings: Settings,
    report: Callable[[str], None] = lambda _: None,
    with_prometheus: bool = False,
    prometheus_port: int = DEFAULT_PORT,
) -> list[ServiceStatus]:
    """Start what the settings say we own (nothing, for an external cluster); create topics.

    ``with_prometheus`` also starts a local Prometheus on ``prometheus_port`` scraping our services.
    """
    kafka = settings.kafka
    if kafka.embedded:
        start_broker(kafka, settings.home, report)
    elif not metadata_ready(kafka.client_config(), timeout_s=10.0):
        raise RuntimeError(
            f"the Kafka cluster at {kafka.bootstrap} (setting kafka.bootstrap_servers) "
            "does not answer a metadata request"
        )
    partitions = ensure_topics(kafka)
    report("topics: " + ", ".join(f"{name} ({count} partitions)" for name, count in partitions.items()))
    if _owns_triton(settings):
        start_triton(settings, report)
    if with_prometheus:
        start_prometheus(settings, report, port=prometheus_port)
    return stack_status(settings)


def stack_down(settings: Settings) -> list[str]:
    """Stop exactly the processes `stack_up` started; an external cluster is left alone."""
    stopped = []
    pid = stop_prometheus(settings)
    if pid is not None:
        stopped.append(f"prometheus (pid {pid})")
    pid = stop_triton(settings.home)
    if pid is not None:
        stopped.append(f"triton (pid {pid})")
    if settings.kafka.embedded:
        pid = stop_broker(settings.home, settings.kafka.broker_version)
        if pid is not None:
            stopped.append(f"kafka broker (pid {pid})")
    return stopped


def stack_status(settings: Settings) -> list[ServiceStatus]:
    """Kafka's state, and Prometheus's when `stack up --with-prometheus` started one (until `stack down`)."""
    return [_kafka_status(settings), *_triton_status(settings), *_prometheus_status(settings)]


def _owns_triton(settings: Settings) -> bool:
    """Whether the stack runs Triton: the model runs there and no existing server is named."""
    return settings.serving.model_server == "triton" and settings.serving.triton_url is None


def _triton_status(settings: Settings) -> list[ServiceStatus]:
    serving = settings.serving
    paths = TritonPaths.under(settings.home)
    if serving.triton_url is not None and serving.model_server == "triton":
        return [ServiceStatus("triton", triton_ready(serving.triton_url), serving.triton_url, "external server")]
    if not _owns_triton(settings) and not paths.pid_file.is_file():
        return []  # the model runs in the scorer's process: no Triton in this stack
    process = running_triton(paths)
    if process is None:
        return [ServiceStatus("triton", False, "-", f"stopped; see {paths.log}")]
    return [ServiceStatus("triton", triton_ready(process.url), process.url,
                          f"pid {process.pid}, metrics :{process.metrics_port}, log {paths.log}")]


def _kafka_status(settings: Settings) -> ServiceStatus:
    kafka = settings.kafka
    if not kafka.embedded:
        ready = metadata_ready(kafka.client_config())
        return ServiceStatus("kafka", ready, kafka.bootstrap, "external cluster")
    paths = BrokerPaths.under(settings.home, kafka.broker_version)
    process = running_broker(paths)
    ready = process is not None and metadata_ready(kafka.client_config())
    detail = f"pid {process.pid}, log {paths.log}" if process else f"stopped (data in {paths.data})"
    return ServiceStatus("kafka", ready, kafka.bootstrap, detail)


def _prometheus_status(settings: Settings) -> list[ServiceStatus]:
    paths = PrometheusPaths.under(settings.home)
    if not paths.pid_file.is_file():
        return []  # not started by `stack up --with-prometheus`: not part of this stack
    process = running_prometheus(paths)
    if process is None:
        return [ServiceStatus("prometheus", False, "-", f"exited; see {paths.log}")]
    ready = is_ready(process.url)
    return [ServiceStatus("prometheus", ready, process.url, f"pid {process.pid}, log {paths.log}")]
