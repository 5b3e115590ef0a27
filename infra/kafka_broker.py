"""The embedded Apache Kafka broker: one KRaft node (broker + controller) run from Maven jars.

Everything it owns lives under ``<data_dir>/kafka``: the config it wrote, the formatted log
directory, its log file and a pid file that records exactly which process it started.
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from activity_settings import ActivityError, KafkaSettings
from infra.jars import fetch_jars
from infra.processes import port_taken, proc_start_time, stop_group, tail

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class BrokerError(ActivityError, RuntimeError):
    """The embedded broker could not be started or reached; the message says why and where."""


@dataclass(frozen=True)
class BrokerPaths:
    root: Path
    jars: Path

    @classmethod
    def under(cls, home: Path, version: str) -> BrokerPaths:
        return cls(root=home / "kafka", jars=home / "jars" / f"kafka-{version}")

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.root / "log4j2.xml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "broker.log"

    @property
    def console(self) -> Path:
        return self.root / "broker.out"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"


@dataclass(frozen=True)
class BrokerProcess:
    pid: int
    started_at: str  # /proc start time, so a recycled pid is never mistaken for ours


def server_properties(kafka: KafkaSettings, data: Path) -> str:
    """A single-node KRaft config listening only on the configured host."""
    return render_properties(broker_properties(kafka, data))


def broker_properties(kafka: KafkaSettings, data: Path) -> dict[str, str]:
    """The embedded broker's settings as a dict, so a variant (``infra/secure_kafka.py``) can override some."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{kafka.host}:{kafka.controller_port}",
        "listeners": f"PLAINTEXT://{kafka.host}:{kafka.port},CONTROLLER://{kafka.host}:{kafka.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{kafka.host}:{kafka.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data),
        "num.partitions": str(kafka.partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "message.max.bytes": str(2 * 1024 * 1024),
        "log.retention.hours": "-1",
        "log.segment.bytes": str(256 * 1024 * 1024),
    }


def render_properties(props: dict[str, str]) -> str:
    """Java ``.properties`` text, one setting a line, each value escaped as ``java.util.Properties`` reads it back.

    A newline becomes ``\\n``, so a PEM certificate or key fits on one line; the file is read as ISO-8859-1, so
    anything beyond ASCII becomes ``\\uXXXX``.
    """
    return "".join(f"{key}={_escape_value(value)}\n" for key, value in props.items())


def _escape_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if escaped.startswith((" ", "\f")):
        escaped = "\\" + escaped  # a leading blank would be skipped as separator whitespace
    out = []
    for ch in escaped:
        if ord(ch) < 128:
            out.append(ch)
        else:  # in UTF-16 code units, as Java reads \u escapes
            units = ch.encode("utf-16-be")
            out.extend(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04x}" for i in range(0, len(units), 2))
    return "".join(out)


def running_broker(paths: BrokerPaths) -> BrokerProcess | None:
    """The broker process this data directory started, if it is still alive."""
    try:
        pid_text, started_at = paths.pid_file.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if proc_start_time(pid) != started_at:
        return None
    return BrokerProcess(pid=pid, started_at=started_at)


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, an id starting with ``-`` is drawn again: the storage
    tool's argument parser would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(paths: BrokerPaths, classpath: str, add_scram: Sequence[str] = ()) -> None:
    """``kafka-storage format``; each of ``add_scram`` is a ``--add-scram`` credential written into the metadata log."""
    if (paths.data / "meta.properties").is_file():
        return  # formatted by an earlier `up`: reuse the data
    cluster_id = new_cluster_id()
    scram = [arg for credential in add_scram for arg in ("--add-scram", credential)]
    result = subprocess.run(
        ["java", "-cp", classpath, "kafka.tools.StorageTool", "format",
         "-t", cluster_id, "-c", str(paths.config), *scram],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise BrokerError(f"formatting Kafka storage in {paths.data} failed:\n{result.stderr[-2000:]}")


def metadata_ready(client_config: dict[str, str | int | float | bool], timeout_s: float = 2.0) -> bool:
    """True when the cluster answers a metadata request."""
    admin = AdminClient({**client_config, "socket.timeout.ms": 2000, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout_s)
    except Exception:  # any failure means "not ready yet"
        return False
    return True


def start_broker(
    kafka: KafkaSettings, home: Path, report: Callable[[str], None] = lambda _: None
) -> BrokerProcess:
    """Start the embedded broker (or find it running) and return once it answers metadata."""
    paths = BrokerPaths.under(home, kafka.broker_version)
    existing = running_broker(paths)
    if existing is not None:
        report(f"broker already running (pid {existing.pid})")
        _wait_ready(kafka, paths, existing)
        return existing
    for name, port in (("kafka.port", kafka.port), ("kafka.controller_port", kafka.controller_port)):
        if port_taken(kafka.host, port):
            env = "ACTIVITY_" + name.upper().replace(".", "__")
            raise BrokerError(
                f"port {kafka.host}:{port} is taken by another process; "
                f"free it or choose another with setting {name} (env {env})"
            )
    report(f"fetching Kafka {kafka.broker_version} jars (cached after the first time)")
    jars = fetch_jars("kafka-broker", paths.jars, {"kafka.version": kafka.broker_version})
    classpath = str(paths.jars / "*")
    if not jars:
        raise BrokerError(f"no jars in {paths.jars}")
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(server_properties(kafka, paths.data))
    paths.log4j.write_text(LOG4J2_XML.format(log=paths.log))
    _format_storage(paths, classpath)
    report(f"starting broker on {kafka.host}:{kafka.port}")
    heap = kafka.heap
    with paths.console.open("ab") as console:
        proc = subprocess.Popen(
            ["java", f"-Xmx{heap}", f"-Xms{min_heap(heap)}", "-XX:+UseG1GC",
             "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={paths.log4j}",
             f"-Dkafka.logs.dir={paths.root}", "-cp", classpath, "kafka.Kafka", str(paths.config)],
            stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    started_at = None
    for _ in range(50):
        started_at = proc_start_time(proc.pid)
        if started_at:
            break
        time.sleep(0.01)
    process = BrokerProcess(pid=proc.pid, started_at=started_at or "?")
    paths.pid_file.write_text(f"{process.pid} {process.started_at}\n")
    _wait_ready(kafka, paths, process)
    return process


def min_heap(heap: str) -> str:
    return "256m" if heap.lower().endswith("g") or int(heap[:-1]) >= 256 else heap


def _wait_ready(kafka: KafkaSettings, paths: BrokerPaths, process: BrokerProcess) -> None:
    deadline = time.monotonic() + kafka.start_timeout_s
    while time.monotonic() < deadline:
        if proc_start_time(process.pid) != process.started_at:
            raise BrokerError(f"the broker exited during start; last lines of {paths.console}:\n"
                              + tail(paths.console) + "\n" + tail(paths.log))
        if metadata_ready(kafka.client_config(), timeout_s=1.0):
            return
        time.sleep(0.2)
    raise BrokerError(
        f"the broker did not answer within {kafka.start_timeout_s:.0f}s "
        f"(setting kafka.start_timeout_s); see {paths.log}:\n{tail(paths.log)}"
    )




def stop_broker(home: Path, version: str, timeout_s: float = 30.0) -> int | None:
    """Stop the broker this data directory started (SIGTERM, then SIGKILL); return its pid."""
    paths = BrokerPaths.under(home, version)
    process = running_broker(paths)
    if process is None:
        paths.pid_file.unlink(missing_ok=True)
        return None
    stop_group(process.pid, process.started_at, timeout_s)
    paths.pid_file.unlink(missing_ok=True)
    return process.pid

