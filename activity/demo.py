"""`activity demo`: the platform's story on the embedded default, bounded, exiting by itself.

Start the stack; publish a simulated population's last months of transactions with some
malformed ones mixed in; stream them into Feast (bad ones dead-lettered); check online features
against the point-in-time offline path; train, evaluate against the baselines and promote a
champion in MLflow; start the scorer and score customers over REST; shift the population
(grocery amounts x3, a new channel mix) and stream the shifted weeks; detect the drift, receive
the alert on a local webhook, and retrain by the drift policy. Each run works in its own area
(``<data_dir>/demo/<time>``, fresh topics), so it can be re-run.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pandas as pd
import uvicorn
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from activity.retraining import drift_then_retrain
from activity_settings import ActivityError, Settings, StreamingSettings, TopicSettings
from features.store import FeatureWriter, historical_features, online_features
from infra.stack import stack_up
from infra.topics import ensure_topics, topic_offsets
from model_contract.registry import tracking_uri
from model_contract.triton_repository import repository_dir
from monitoring.estimate_job import run_estimate
from monitoring.receiver import AlertReceiver
from serving.auth import issue_token
from serving.main import build_app
from streaming.consume import read_topic
from streaming.publish import Pace, publish_simulation
from streaming.runner import run_stream
from streaming.simulator import Shift, make_population
from training.pipeline import Reporter, train

DEMO_TOPIC_PREFIX = "demo-"
MALFORMED = [
    b'{"schema_version": 1, "amount": ',
    b'{"schema_version": 1, "transaction_id": "x1", "customer_id": "c1", "amount": -5, "currency": "EUR", '
    b'"event_time": "2026-01-01T00:00:00Z", "merchant_id": "m1", "merchant_category": "fuel", "channel": "atm"}',
    b"not json at all",
]


class DemoFailed(ActivityError, RuntimeError):
    """A step's check failed; the message says which and what was seen."""


class _ShiftArgs(TypedDict):
    """The fields of ``Shift`` the demo sets besides ``from_day``."""

    amount_factor: float
    category: str
    channel_mix: tuple[float, ...]


SHIFT: _ShiftArgs = {"amount_factor": 3.0, "category": "grocery", "channel_mix": (0.1, 0.2, 0.3, 0.1, 0.3)}


def demo_settings(settings: Settings, tag: str) -> Settings:
    topics = TopicSettings(transactions=f"{DEMO_TOPIC_PREFIX}{tag}-transactions",
                           dlq=f"{DEMO_TOPIC_PREFIX}{tag}-transactions.dlq",
                           predictions=f"{DEMO_TOPIC_PREFIX}{tag}-predictions")
    return settings.model_copy(update={
        "data_dir": settings.home / "demo" / tag,
        "kafka": settings.kafka.model_copy(update={"topics": topics}),
        "streaming": StreamingSettings(**{**settings.streaming.model_dump(), "trigger_interval_s": 0.0,
                                          "metrics_port": 0}),
        "serving": settings.serving.model_copy(update={"port": _free_port(), "reload_interval_s": 5.0}),
        "monitoring": settings.monitoring.model_copy(update={"drift_source": "snapshot", "retrain_on_drift": True,
                                                            "retrain_min_interval_h": 0.0}),
    })


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _drop_old_demos(settings: Settings, keep: str) -> None:
    admin = AdminClient(settings.kafka.client_config())
    old = [name for name in admin.list_topics(timeout=10).topics
           if name.startswith(DEMO_TOPIC_PREFIX) and not name.startswith(f"{DEMO_TOPIC_PREFIX}{keep}")]
    if old:
        for future in admin.delete_topics(old, operation_timeout=30).values():
            future.result()


def run_demo(settings: Settings, console: Console, customers: int, days: int, shift_days: int = 28) -> None:
    step = _Steps(console)
    figures: dict[str, str] = {}
    # the demo scores through Triton, as the platform deploys it; the demo's own data area writes its
    # versions into the stack's model repository, the one the stack's Triton reads
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"model_server": "triton"})})
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(
        update={"triton_repository": repository_dir(settings)})})
    with step("start the stack"):
        stack_up(settings, report=lambda line: console.print(f"  [dim]{line}[/dim]"))
    tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    receiver = AlertReceiver(on_alert=lambda alert: console.print(
        f"  [yellow]webhook received[/yellow] {alert['labels']['alertname']}: {alert['annotations']['summary']}"))
    demo = demo_settings(settings, tag)
    demo = demo.model_copy(update={"monitoring": demo.monitoring.model_copy(update={"webhook_url": receiver.url})})
    _drop_old_demos(settings, keep=tag)
    ensure_topics(demo.kafka)
    console.print(f"  [dim]demo area {demo.home}, topic {demo.kafka.topics.transactions}[/dim]")

    today = datetime.now(UTC).date()
    sim = settings.simulation
    first_day = today - timedelta(days=days + shift_days)
    population = make_population(customers, first_day, days + shift_days, sim.seed, sim.mean_daily_rate)
    with step(f"publish {days} days of {customers:,} simulated customers, plus {len(MALFORMED)} malformed events"):
        report = publish_simulation(demo.kafka, population, pace=Pace(), days=days)
        producer = Producer(demo.kafka.client_config())
        for value in MALFORMED:
            producer.produce(demo.kafka.topics.transactions, value, b"demo")
        producer.flush(30)
        console.print(f"  delivered {report.delivered:,} of {report.queued:,} at {report.rate:,.0f} events/s")
        if report.delivered != report.queued:
            raise DemoFailed(f"{report.queued - report.delivered} events were not delivered")
        figures["events published"] = f"{report.delivered:,} (+{len(MALFORMED)} malformed)"

    with step("stream them into Feast (Spark Structured Streaming)"):
        summary = run_stream(demo, until_idle_s=2.0, report=lambda line: console.print(f"  [dim]{line}[/dim]"))
        stored = sum(high - low for low, high in topic_offsets(demo.kafka, demo.kafka.topics.dlq).values())
        console.print(f"  {summary.input_rows:,} records in {summary.batches} micro-batches; "
                      f"{stored} dead letters on {demo.kafka.topics.dlq}")
        for record in read_topic(demo.kafka, demo.kafka.topics.dlq, limit=len(MALFORMED), idle_timeout_s=3):
            console.print(f"  [dim]dead letter[/dim] {record.header('error_code')}: {record.header('error_message')}",
                          highlight=False)
        if stored != len(MALFORMED):
            raise DemoFailed(f"expected {len(MALFORMED)} dead letters, found {stored}")
        figures["dead letters"] = f"{stored} (each with its reason)"

    with step("read features online and check them against the offline store"):
        _check_features(demo, console, list(population.customer_ids[:5]) + ["never-seen-customer"])

    with step("train the ensemble, compare it with the baselines, promote it (MLflow)"):
        outcome = _train(demo, console)
        figures["model"] = (f"v{outcome.version}: ROC-AUC {outcome.metrics['ensemble']['roc_auc']:.3f}, "
                            f"macro-F1 {outcome.metrics['ensemble']['macro_f1']:.3f} -> {outcome.decision.alias}")
        if outcome.decision.alias != "champion":
            raise DemoFailed(f"the first model was not promoted: {outcome.decision.summary()}")

    with step(f"start the scorer and score customers over REST (model in {demo.serving.model_server})"), \
            _scorer(demo) as (base, token):
        figures["scored"] = _score(base, token, list(population.customer_ids[:200]), console)

    with step(f"shift the population for {shift_days} days (grocery amounts x3, new channel mix) and stream it"):
        shifted = population.shifted(Shift(days, **SHIFT))
        report = publish_simulation(demo.kafka, shifted, first_day=days, pace=Pace())
        summary = run_stream(demo, until_idle_s=2.0, report=lambda line: console.print(f"  [dim]{line}[/dim]"))
        console.print(f"  {report.delivered:,} shifted events streamed ({summary.input_rows:,} records)")

    with step("estimate the champion's quality before the labels arrive (CBPE)"):
        figures["estimate"] = _estimate(demo, console)

    with step("detect the drift, alert, retrain by the drift policy"):
        drift = _drift(demo, console)
        received = receiver.alert_names()
        if not drift.figures.detected or "ActivityFeatureDrift" not in received:
            raise DemoFailed(f"the shift was not detected or not alerted: {drift.summary()}; alerts {received}")
        counted = [name for name in drift.figures.drifted if name in drift.figures.time_driven]
        if counted:
            raise DemoFailed(f"time-driven features counted as drift: {', '.join(counted)}")
        apart = ", ".join(name for name, moved in drift.figures.time_driven.items() if moved) or "none"
        counted_features = len(drift.figures.scores) - len(drift.figures.time_driven)
        figures["drift"] = f"{len(drift.figures.drifted)}/{counted_features} " \
                           f"features, share {drift.figures.share:.2f} (importance-weighted " \
                           f"{drift.figures.weighted_share:.2f}; time-driven apart: {apart}); " \
                           f"alerts received: {', '.join(received)}"
        figures["retraining"] = drift.retrain or "not started"
        figures["drift report"] = drift.report_path.name
        paths = {"drift report": drift.report_path}
    receiver.close()
    step.summary()
    _print_figures(console, figures, demo, paths)


def _check_features(demo: Settings, console: Console, sample: list[str]) -> None:
    store = FeatureWriter.open(demo).store
    now = int(time.time())
    online = online_features(store, sample, [now] * len(sample))
    table = Table("customer", "tx 7d", "tx 30d", "spend 30d", "days since last", "trend 30d", "online share")
    for row in online.itertuples(index=False):
        table.add_row(row.customer_id, f"{row.tx_count_7d:.0f}", f"{row.tx_count_30d:.0f}",
                      f"{row.spend_30d:,.2f}", f"{row.days_since_last_tx:.1f}", f"{row.trend_count_30d:+.2f}",
                      f"{row.share_online_90d:.0%}")
    console.print(table)
    entities = pd.DataFrame({"customer_id": sample, "event_timestamp": pd.to_datetime([now] * len(sample),
                                                                                       unit="s", utc=True)})
    offline = historical_features(store, entities).set_index("customer_id").loc[sample]
    same = all((online.set_index("customer_id")[name] - offline[name]).abs().max() < 1e-9
               for name in ("tx_count_7d", "tx_count_30d", "spend_30d", "days_since_last_tx"))
    console.print("  online features == point-in-time offline features: "
                  + ("[green]yes[/green]" if same else "[red]no[/red]"))
    if not same:
        raise DemoFailed("online and offline features differ")


def _train(demo: Settings, console: Console) -> Any:
    class Progress(Reporter):
        def step(self, name: str, detail: str = "") -> None:
            console.print(f"  [dim]{name}{': ' + detail if detail else ''}[/dim]")

    outcome = train(demo, Progress())
    table = Table("model", "ROC-AUC", "macro-F1", title="test window")
    for name, values in sorted(outcome.metrics.items(), key=lambda item: -item[1].get("roc_auc", 0.0)):
        table.add_row(name, f"{values.get('roc_auc', float('nan')):.3f}", f"{values.get('macro_f1', float('nan')):.3f}")
    console.print(table)
    console.print(f"  version {outcome.version}: {outcome.decision.summary()}")
    return outcome


@contextmanager
def _scorer(demo: Settings) -> Iterator[tuple[str, str]]:
    """The scorer app (``activity serve run``'s) on a free loopback port in a thread, and a read token."""
    app = build_app(demo)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=demo.serving.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="demo-scorer", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise DemoFailed(f"the scorer did not start on 127.0.0.1:{demo.serving.port}")
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{demo.serving.port}", issue_token(demo, "demo", ["scores:read"])
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _score(base: str, token: str, customers: list[str], console: Console) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        table = Table("customer", "class", "p(decline)", "p(stable)", "p(growth)", "model", "features as of")
        started = time.perf_counter()
        for customer in customers[:5]:
            answer = client.get(f"/v1/customers/{customer}/activity").raise_for_status().json()
            p = answer["probabilities"]
            table.add_row(customer, answer["class"], f"{p['decline']:.2f}", f"{p['stable']:.2f}", f"{p['growth']:.2f}",
                          f"{answer['model']['name']} v{answer['model']['version']}", str(answer["features"]["as_of"]))
        single_ms = (time.perf_counter() - started) / 5 * 1000
        console.print(table)
        items = [{"customer_id": customer} for customer in customers]
        batch = client.post("/v1/activity:batch", json={"customers": items}).raise_for_status().json()
        classes = pd.Series([item["class"] for item in batch["results"]]).value_counts()
        unauthorized = httpx.get(f"{base}/v1/customers/{customers[0]}/activity").status_code
    console.print(f"  batch of {len(customers)}: " + ", ".join(f"{k} {v}" for k, v in classes.items())
                  + f"; without credentials: HTTP {unauthorized}; {single_ms:.1f} ms per single request")
    if unauthorized != 401:
        raise DemoFailed(f"an unauthenticated request got HTTP {unauthorized}, not 401")
    degraded = [item for item in batch["results"] if item["degraded"]]
    if degraded:
        raise DemoFailed(f"{len(degraded)} of {len(customers)} answers were degraded: {degraded[0]['fallback']}")
    return f"{len(customers) + 5} customers over REST ({single_ms:.1f} ms per single request)"


def _estimate(demo: Settings, console: Console) -> str:
    report = run_estimate(demo, source="snapshot")
    lines = []
    for group in report.groups:
        e = group.estimate
        test = "n/a" if group.test_roc_auc is None else f"{group.test_roc_auc:.3f}"
        band = f"{e.roc_auc_band.low:.3f}..{e.roc_auc_band.high:.3f}"
        lines.append(f"v{group.version}: estimated ROC-AUC {e.roc_auc:.3f} ({band}), macro-F1 {e.macro_f1:.3f}, "
                     f"test ROC-AUC {test}")
        console.print(f"  {lines[-1]}; expected shares " + ", ".join(f"{k} {v:.2f}" for k, v in e.share.items()))
    alerts = ", ".join(a.name for a in report.alerts) or "no alert"
    console.print(f"  {report.detail}: {alerts}")
    return "; ".join(lines) + f"; {alerts}"


def _drift(demo: Settings, console: Console) -> Any:
    drift = drift_then_retrain(demo, progress=lambda line: console.print(f"  [dim]{line}[/dim]"))
    console.print(f"  {drift.summary()}")
    counted = {name: value for name, value in drift.figures.psi.items() if name not in drift.figures.time_driven}
    top = sorted(counted.items(), key=lambda item: -item[1])[:5]
    console.print("  highest PSI: " + ", ".join(f"{name} {value:.2f}" for name, value in top)
                  + "; time-driven, apart: " + ", ".join(f"{name} {drift.figures.psi[name]:.2f}"
                                                         for name in drift.figures.time_driven))
    console.print(f"  retraining: {drift.retrain}")
    return drift


def _print_figures(console: Console, figures: dict[str, str], demo: Settings, paths: dict[str, Path]) -> None:
    table = Table("what", "figure", title="the platform, end to end")
    for name, value in figures.items():
        table.add_row(name, value)
    console.print(table)
    for name, path in paths.items():
        console.print(f"{name}: {path}", soft_wrap=True, highlight=False)
    console.print(f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri(demo)}", soft_wrap=True, highlight=False)
    console.print("The broker keeps running for the next command; `activity stack down` stops it.")


class _Steps:
    """Numbered steps with timings; a failed step is reported before the error propagates."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.done: list[tuple[str, float]] = []

    def __call__(self, title: str) -> _Steps:
        self.title = title
        return self

    def __enter__(self) -> None:
        self.console.rule(f"[bold]{len(self.done) + 1}. {self.title}")
        self.started = time.monotonic()

    def __exit__(self, exc_type, exc, tb) -> None:
        elapsed = time.monotonic() - self.started
        if exc_type is None:
            self.done.append((self.title, elapsed))
            self.console.print(f"[green]✓ done[/green] in {elapsed:.1f}s")
        else:
            self.console.print(f"[red]✗ failed[/red] after {elapsed:.1f}s")

    def summary(self) -> None:
        table = Table("step", "status", "seconds", title="demo summary")
        for title, elapsed in self.done:
            table.add_row(title, "[green]done[/green]", f"{elapsed:.1f}")
        self.console.print(table)
