"""`activity up`: the whole platform on the embedded default, with a simulated upstream, until Ctrl-C.

Starts the broker, the streaming job, the scorer, the retraining scheduler and the monitoring
scheduler (each a child process with its log under ``<data_dir>/up/logs``), and a simulated
upstream sending transactions that happen now at a steady rate. On a fresh data directory it
first publishes a history of the population and trains a first champion, so the scorer answers
from a model at once; a second ``up`` reuses everything. Ctrl-C (or ``--duration``) stops the
upstream, then the services in reverse order, then the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from mlflow.exceptions import MlflowException
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.text import Text

from activity_settings import ActivityError, Settings, settings_environment
from infra.stack import stack_down, stack_up
from model_contract.artifacts import CHAMPION
from model_contract.registry import client, tracking_uri
from serving.auth import issue_token
from streaming.publish import Pace, TransactionPublisher, encode_simulated, publish_simulation
from streaming.simulator import Population, live_events, make_population

ERROR_MARKERS = ("Traceback (most recent call last)", " ERROR ", "[error]", "Exception in thread")
# Spark and Py4J log these at ERROR on a normal shutdown; they are not failures of the platform.
BENIGN = ("SparkUI", "ShutdownHookManager", "Py4J", "py4j", "ContextCleaner")


class UpFailed(ActivityError, RuntimeError):
    """A service did not come up; the message names it and its log."""


@dataclass
class Service:
    name: str
    args: list[str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self, env: dict[str, str]) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
        # A new session: Ctrl-C reaches `up` only, which stops the services in order.
        self.process = subprocess.Popen([sys.executable, "-m", "activity", *self.args], stdout=handle,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)
        handle.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        return self.process.returncode


@dataclass
class Upstream:
    """Simulated transactions happening now, at ``rate`` per second, until stopped."""

    settings: Settings
    population: Population
    rate: float
    sent: int = 0
    stop_event: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        publisher = TransactionPublisher(self.settings.kafka, self.settings.kafka.topics.transactions)
        tick, interval = int(time.time() * 10), 0.1
        owed = 0.0
        try:
            next_at = time.monotonic()
            while not self.stop_event.is_set():
                now_ms = int(time.time() * 1000)
                owed += self.rate * interval
                count = int(owed)
                owed -= count
                if count:
                    table = live_events(self.population, count, now_ms - int(interval * 1000), now_ms, tick)
                    publisher.publish(encode_simulated(table), pc.cast(table["customer_id"], pa.binary()).to_pylist())
                    self.sent += count
                tick += 1
                next_at += interval
                self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # reported by the status line and at exit
            self.error = exc
        finally:
            publisher.close()
            del publisher  # librdkafka stops reconnecting once the producer is gone


def up_home(settings: Settings) -> Path:
    return settings.home / "up"


def run_up(settings: Settings, console: Console, *, customers: int, history_days: int, rate: float,
           duration_s: float | None, with_prometheus: bool = False) -> int:
    """Run until Ctrl-C or ``duration_s``; returns the number of error lines found in the services' logs."""
    logs = up_home(settings) / "logs"
    env = {**os.environ, **settings_environment(settings)}
    # trajectories play out over the history and the month after it; live traffic goes on from there
    population = make_population(customers, _history_start(settings, history_days), history_days + 30,
                                 settings.simulation.seed, settings.simulation.mean_daily_rate)
    services = [
        Service("stream", ["stream", "run"], logs / "stream.log"),
        Service("scorer", ["serve", "run"], logs / "scorer.log"),
        Service("training-schedule", ["train", "schedule"], logs / "training-schedule.log"),
        Service("monitor-schedule", ["monitor", "schedule"], logs / "monitor-schedule.log"),
    ]
    if not settings.streaming.metrics_port or not settings.monitoring.metrics_port:
        raise UpFailed("`activity up` watches the services through their /metrics: streaming.metrics_port and "
                       "monitoring.metrics_port must not be 0")
    console.rule("[bold]activity up")
    stack_up(settings, report=lambda line: console.print(f"  [dim]{line}[/dim]"), with_prometheus=with_prometheus)
    marks = {service.name: _log_size(service.log) for service in services}
    upstream: Upstream | None = None
    thread: threading.Thread | None = None
    try:
        services[0].start(env)
        if not _has_champion(settings):
            _bootstrap(settings, console, population, history_days, services[0], logs, env)
        for service in services[1:]:
            service.start(env)
        _wait_ready(settings, services[1])
        upstream = Upstream(settings, population, rate)
        thread = threading.Thread(target=upstream.run, name="upstream", daemon=True)
        thread.start()
        token = issue_token(settings, "activity-up", ["scores:read", "model:read"])
        _print_where(console, settings, token, logs, population.customer_ids[0])
        _watch(console, settings, services, upstream, duration_s)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping: upstream, scorer, schedulers, streaming job, broker")
        if upstream is not None:
            upstream.stop_event.set()
            if thread is not None:
                thread.join(30)
        for service in reversed(services):
            code = service.stop(timeout_s=120 if service.name == "stream" else 30)
            if code is not None:
                console.print(f"  {service.name}: stopped (exit code {code})")
        stack_down(settings)
        console.print("  broker: stopped")
    errors = _log_errors(services, marks)
    for name, line in errors[:20]:
        console.print(f"[red]error in {name} log:[/red] {line}", highlight=False)
    sent = upstream.sent if upstream is not None else 0
    console.print(f"up: {sent:,} live transactions sent; {len(errors)} error lines in the services' logs "
                  f"({logs})")
    if upstream is not None and upstream.error is not None:
        console.print(f"[red]upstream failed:[/red] {upstream.error}")
        return len(errors) + 1
    return len(errors)


def _history_start(settings: Settings, history_days: int) -> date:
    """The population's first day: ``history_days`` before today (fixed per data directory, so a restart
    continues the same population)."""
    marker = up_home(settings) / "population-start"
    if marker.is_file():
        return datetime.fromisoformat(marker.read_text().strip()).date()
    start = (datetime.now(UTC) - timedelta(days=history_days)).date()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(start.isoformat())
    return start


def _has_champion(settings: Settings) -> bool:
    try:
        client(settings).get_model_version_by_alias(settings.mlflow.registered_model, CHAMPION)
    except MlflowException:
        return False
    return True


def _bootstrap(settings: Settings, console: Console, population: Population, history_days: int, stream: Service,
               logs: Path, env: dict[str, str]) -> None:
    """A fresh data directory: publish the history, let the stream catch up, train the first champion."""
    console.print(f"  first start: publishing {history_days} days of history of {population.size:,} customers")
    report = publish_simulation(settings.kafka, population, pace=Pace(), days=history_days)
    console.print(f"  {report.delivered:,} historical transactions published; waiting for the stream to catch up")
    _wait_caught_up(settings, stream, report.delivered)
    console.print("  training the first champion (log: training-bootstrap.log)")
    trainer = Service("training-bootstrap", ["train", "run"], logs / "training-bootstrap.log")
    trainer.start(env)
    assert trainer.process is not None
    if trainer.process.wait() != 0 or not _has_champion(settings):
        raise UpFailed(f"the first training run did not register a champion; see {trainer.log}")


def _wait_caught_up(settings: Settings, stream: Service, expected: int, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not stream.alive():
            raise UpFailed(f"the streaming job stopped; see {stream.log}")
        figures = _scrape(settings.streaming.metrics_port)
        valid = figures.get("activity_stream_valid_events_total", 0) + figures.get(
            "activity_stream_duplicate_events_total", 0)
        if valid >= expected and figures.get("activity_stream_consumer_lag_messages", 1) == 0:
            return
        time.sleep(2)
    raise UpFailed(f"the streaming job did not catch up in {timeout_s:.0f} s; see {stream.log}")


def _wait_ready(settings: Settings, scorer: Service, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not scorer.alive():
            raise UpFailed(f"the scorer stopped; see {scorer.log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{settings.serving.port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise UpFailed(f"the scorer was not ready in {timeout_s:.0f} s; see {scorer.log}")


def _print_where(console: Console, settings: Settings, token: str, logs: Path, customer: str) -> None:
    base = f"http://{settings.serving.host}:{settings.serving.port}"
    lines = [
        f"API         {base}/docs  (OpenAPI)",
        f"token       {token}",
        f"try         curl -H 'Authorization: Bearer <token>' {base}/v1/customers/{customer}/activity",
        f"MLflow UI   mlflow ui --backend-store-uri {tracking_uri(settings)}",
        f"drift       reports in {settings.home / 'monitoring' / 'reports'}",
        f"metrics     scorer {base}/metrics · stream http://127.0.0.1:{settings.streaming.metrics_port}/metrics · "
        f"monitor http://127.0.0.1:{settings.monitoring.metrics_port}/metrics",
        f"logs        {logs}",
        "stop        Ctrl-C",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _watch(console: Console, settings: Settings, services: list[Service], upstream: Upstream,
           duration_s: float | None) -> None:
    started = time.monotonic()
    with Live(Text("starting"), console=console, refresh_per_second=1, transient=False) as live:
        while duration_s is None or time.monotonic() - started < duration_s:
            stopped = [s.name for s in services if not s.alive()]
            if stopped:
                raise UpFailed(f"{', '.join(stopped)} stopped unexpectedly; see {services[0].log.parent}")
            if upstream.error is not None:
                raise UpFailed(f"the simulated upstream failed: {upstream.error}")
            live.update(Text(_status(settings, upstream, time.monotonic() - started)))
            time.sleep(1)
    console.print()


def _status(settings: Settings, upstream: Upstream, elapsed: float) -> str:
    stream = _scrape(settings.streaming.metrics_port)
    scorer = _scrape(settings.serving.port)
    monitor = _scrape(settings.monitoring.metrics_port)
    freshness = stream.get("activity_stream_freshness_p99_seconds")
    version = scorer.get('activity_scorer_model_version{alias="champion"}')
    drift = monitor.get("activity_monitor_drift_share")
    drift_run = monitor.get("activity_monitor_drift_last_run_timestamp_seconds")
    rate = stream.get("activity_stream_input_rows_per_second", 0.0)
    fresh = "-" if freshness is None else f"{freshness:.1f} s"
    return (f"{elapsed:5.0f} s · events in {upstream.sent:,} ({rate:,.0f}/s into the stream) · freshness p99 "
            f"{fresh} · model "
            f"{'-' if not version else f'v{version:.0f}'} · drift "
            f"{'not run yet' if not drift_run else f'share {drift:.2f}'}")


def _scrape(port: int) -> dict[str, float]:
    """The samples of a /metrics endpoint on loopback ({} when it does not answer)."""
    if not port:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _log_errors(services: list[Service], marks: dict[str, int]) -> list[tuple[str, str]]:
    """Error lines each service wrote to its log during this run."""
    found = []
    for service in services:
        for line in _lines_from(service.log, marks.get(service.name, 0)):
            if any(marker in line for marker in ERROR_MARKERS) and not any(b in line for b in BENIGN):
                found.append((service.name, line.strip()[:300]))
    return found


def _lines_from(path: Path, offset: int) -> Iterator[str]:
    if not path.is_file():
        return
    with path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            yield raw.decode("utf-8", errors="replace")

