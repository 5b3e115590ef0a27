"""`activity`: the platform's command line and composition root.

Each command parses its arguments and calls one function of a part; errors a user can fix are
printed as one clear message with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from activity_settings import Settings, SettingsError, load_settings, settings_environment

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
stack_app = typer.Typer(help="Start, stop and inspect the local stack (Kafka broker).", no_args_is_help=True)
produce_app = typer.Typer(help="Publish transactions to Kafka.", no_args_is_help=True)
topic_app = typer.Typer(help="Look at what is on the topics.", no_args_is_help=True)
schema_app = typer.Typer(help="The `transactions` contract.", no_args_is_help=True)
stream_app = typer.Typer(help="The streaming job: transactions -> Feast features.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(produce_app, name="produce")
app.add_typer(topic_app, name="topic")
app.add_typer(schema_app, name="schema")
train_app = typer.Typer(help="Training: point-in-time sets from Feast, the ensemble, MLflow, the gate.",
                        no_args_is_help=True)
app.add_typer(stream_app, name="stream")
app.add_typer(train_app, name="train")
serve_app = typer.Typer(help="The scorer: REST API over Feast online features and the MLflow champion.",
                        no_args_is_help=True)
key_app = typer.Typer(help="API keys for the scorer (stored hashed under the data directory).", no_args_is_help=True)
serve_app.add_typer(key_app, name="key")
app.add_typer(serve_app, name="serve")
monitor_app = typer.Typer(help="Drift and online quality: the champion watched against its training data and "
                               "against the outcomes that followed its predictions.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")

console = Console()
# An error is one line whatever the terminal's width: rich would otherwise break it at the width of
# whichever of stdin/stdout/stderr is a terminal (or $COLUMNS), splitting a setting's name or a command.
err_console = Console(stderr=True, soft_wrap=True)


class UserError(Exception):
    """An error with a message meant for the user; exit code 1."""


def settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def fail(message: object) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _known_errors() -> tuple[type[Exception], ...]:
    from confluent_kafka import KafkaException

    from infra.jars import JarFetchError
    from infra.kafka_broker import BrokerError
    from infra.reachability import ServiceUnavailable
    from streaming.publish import ReplayError
    from streaming.runner import StreamError

    return (UserError, BrokerError, JarFetchError, ReplayError, StreamError, ServiceUnavailable, KafkaException,
            KeyError, ValueError)


# --------------------------------------------------------------------------------------- stack


@stack_app.command("up")
def stack_up(
    with_prometheus: Annotated[bool, typer.Option(
        "--with-prometheus", help="Also run a local Prometheus (Debian package `prometheus`) scraping the services "
                                  "with infra/prometheus's config and alert rules.")] = False,
    prometheus_port: Annotated[int, typer.Option(min=1, max=65535,
                                                 help="Listen port of that Prometheus (on 127.0.0.1).")] = 9090,
) -> None:
    """Start the embedded Kafka broker (unless kafka.bootstrap_servers names a cluster) and create topics."""
    from infra.observability import PrometheusError
    from infra.stack import stack_up as start

    cfg = settings()
    try:
        statuses = start(cfg, report=lambda line: console.print(f"[dim]·[/dim] {line}"),
                         with_prometheus=with_prometheus, prometheus_port=prometheus_port)
    except (*_known_errors(), PrometheusError) as exc:
        raise fail(exc) from None
    _print_statuses(statuses)


@stack_app.command("down")
def stack_down() -> None:
    """Stop exactly the processes `stack up` started (broker, Prometheus); the data stays for the next `up`."""
    from infra.stack import stack_down as stop

    stopped = stop(settings())
    console.print("stopped: " + ", ".join(stopped) if stopped else "nothing of ours was running")


@stack_app.command("status")
def stack_status() -> None:
    """Say what runs where (Prometheus too, when `stack up --with-prometheus` started it)."""
    from infra.stack import stack_status as status

    statuses = status(settings())
    _print_statuses(statuses)
    if not all(s.running for s in statuses):
        raise typer.Exit(3)


def _print_statuses(statuses: list) -> None:  # list[ServiceStatus]
    table = Table("service", "state", "where", "detail")
    for status in statuses:
        state = "[green]running[/green]" if status.running else "[red]down[/red]"
        table.add_row(status.name, state, status.where, status.detail)
    console.print(table)


# ------------------------------------------------------------------------------------- produce


@produce_app.command("simulate")
def produce_simulate(
    customers: Annotated[int | None, typer.Option(help="Population size [simulation.customers].")] = None,
    days: Annotated[int | None, typer.Option(help="Days of activity to send [simulation.days].")] = None,
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD [simulation.start].")] = None,
    first_day: Annotated[int, typer.Option(help="Skip this many days after start.")] = 0,
    seed: Annotated[int | None, typer.Option(help="Random seed [simulation.seed].")] = None,
    rate: Annotated[float | None, typer.Option(help="Cap in events/s (default: as fast as possible).")] = None,
    shift_from_day: Annotated[int | None, typer.Option(
        help="Shift the population from this day index on (a drift scenario; see the other --shift options).")] = None,
    shift_amount_factor: Annotated[float, typer.Option(help="Multiply amounts by this from the shift on.")] = 1.0,
    shift_category: Annotated[str | None, typer.Option(
        help="Only amounts in this merchant category (default: all).")] = None,
    shift_channel_mix: Annotated[str | None, typer.Option(
        help="New channel mix from the shift on: 5 weights for in_store,online,mobile,atm,other.")] = None,
) -> None:
    """Publish a synthetic population's transactions (deterministic under the seed)."""
    from streaming.simulator import Shift, make_population

    cfg = settings()
    sim = cfg.simulation
    try:
        first = date.fromisoformat(start) if start else sim.start
        population = make_population(customers or sim.customers, first, days or sim.days,
                                     seed if seed is not None else sim.seed, sim.mean_daily_rate)
        if shift_from_day is not None:
            try:
                mix = None if shift_channel_mix is None else tuple(float(w) for w in shift_channel_mix.split(","))
            except ValueError:
                raise UserError(f"--shift-channel-mix takes comma-separated numbers, not {shift_channel_mix!r}"
                                ) from None
            population = population.shifted(Shift(shift_from_day, shift_amount_factor, shift_category, mix))
        elif shift_amount_factor != 1.0 or shift_category or shift_channel_mix:
            raise UserError("--shift-amount-factor, --shift-category and --shift-channel-mix need --shift-from-day")
        _publish_simulation(cfg, population, first_day, rate)
    except _known_errors() as exc:
        raise fail(exc) from None


def _publish_simulation(cfg: Settings, population, first_day: int, rate: float | None) -> None:  # noqa: ANN001
    from streaming.publish import Pace, publish_simulation

    with _progress() as progress:
        task = progress.add_task(f"{population.size:,} customers, {population.days - first_day} days",
                                 total=population.expected_events(first_day))
        report = publish_simulation(cfg.kafka, population, first_day, Pace(rate=rate),
                                    progress=lambda n: progress.advance(task, n))
        progress.update(task, total=report.queued, completed=report.queued)
    _print_report(report, cfg.kafka.topics.transactions)


@produce_app.command("replay")
def produce_replay(
    file: Annotated[Path, typer.Argument(help="CSV or parquet file of transactions.")],
    customer: Annotated[str, typer.Option("--customer", help="Column with the customer id.")] = "customer_id",
    time: Annotated[str, typer.Option("--time", help="Column with the event time.")] = "event_time",
    amount: Annotated[str, typer.Option("--amount", help="Column with the amount.")] = "amount",
    transaction: Annotated[str | None, typer.Option("--transaction", help="Column with a transaction id.")] = None,
    currency: Annotated[str | None, typer.Option(help="Column with the currency.")] = None,
    merchant: Annotated[str | None, typer.Option(help="Column with the merchant id.")] = None,
    category: Annotated[str | None, typer.Option(help="Column with the merchant category.")] = None,
    channel: Annotated[str | None, typer.Option(help="Column with the channel.")] = None,
    default_currency: Annotated[str, typer.Option(help="Currency when no column is mapped.")] = "EUR",
    timezone: Annotated[str, typer.Option(help="Time zone of times without an offset.")] = "UTC",
    speedup: Annotated[float | None, typer.Option(help="Event time runs this many times faster.")] = None,
    rate: Annotated[float | None, typer.Option(help="Cap in events/s.")] = None,
) -> None:
    """Stream a file of real transactions in event-time order (as fast as possible by default)."""
    from streaming.publish import (
        ColumnMapping,
        Pace,
        ReplayDefaults,
        encode_replayed,
        publish_tables,
        read_transactions_file,
    )

    cfg = settings()
    try:
        mapping = ColumnMapping(customer, time, amount, transaction, currency, merchant, category, channel)
        table = read_transactions_file(file, mapping, ReplayDefaults(currency=default_currency, timezone=timezone))
        with _progress() as progress:
            task = progress.add_task(file.name, total=table.num_rows)
            report = publish_tables(cfg.kafka, [table], encode_replayed, Pace(rate=rate, speedup=speedup),
                                    progress=lambda n: progress.advance(task, n))
    except _known_errors() as exc:
        raise fail(exc) from None
    _print_report(report, cfg.kafka.topics.transactions)


def _progress():  # noqa: ANN202
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:  # noqa: ANN001
            return Text(f"{task.speed:>10,.0f}/s" if task.speed else " " * 12)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeElapsedColumn(), console=console)


def _print_report(report, topic: str) -> None:  # noqa: ANN001 - DeliveryReport
    table = Table("topic", "sent", "delivered", "failed", "seconds", "events/s", title="summary")
    failed = report.failed + report.undelivered
    table.add_row(topic, f"{report.queued:,}", f"{report.delivered:,}", f"{failed:,}",
                  f"{report.elapsed_s:.1f}", f"{report.rate:,.0f}")
    console.print(table)
    if failed:
        raise fail(f"{failed:,} messages were not delivered: {report.errors or 'flush timed out'}")


# --------------------------------------------------------------------------------------- topic


@topic_app.command("stats")
def topic_stats() -> None:
    """Messages stored per topic and partition."""
    from infra.reachability import kafka_requirement, require
    from infra.topics import topic_names, topic_offsets

    cfg = settings()
    table = Table("topic", "partition", "first offset", "next offset", "messages")
    try:
        require(kafka_requirement(cfg.kafka))
        for name in topic_names(cfg.kafka):
            for partition, (low, high) in topic_offsets(cfg.kafka, name).items():
                table.add_row(name, str(partition), f"{low:,}", f"{high:,}", f"{high - low:,}")
    except _known_errors() as exc:
        raise fail(exc) from None
    console.print(table)


@topic_app.command("tail")
def topic_tail(
    topic: Annotated[str | None, typer.Option(help="Topic (default: transactions).")] = None,
    count: Annotated[int, typer.Option(help="Stop after this many messages.")] = 10,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    idle: Annotated[float, typer.Option(help="Stop after this many seconds without a message.")] = 10.0,
) -> None:
    """Print messages as they arrive."""
    from streaming.consume import read_topic

    cfg = settings()
    name = topic or cfg.kafka.topics.transactions
    try:
        for record in read_topic(cfg.kafka, name, from_beginning=from_beginning, limit=count,
                                 idle_timeout_s=idle):
            key = record.key.decode(errors="replace") if record.key else "-"
            value = record.value.decode(errors="replace") if record.value else ""
            console.print(f"[dim]{name}[{record.partition}]@{record.offset}[/dim] {key} {value}",
                          markup=True, highlight=False, soft_wrap=True)
    except _known_errors() as exc:
        raise fail(exc) from None


# -------------------------------------------------------------------------------------- stream


@stream_app.command("run")
def stream_run(
    until_idle: Annotated[float | None, typer.Option(help="Stop once caught up and idle this many seconds.")] = None,
) -> None:
    """Run the Spark Structured Streaming job until Ctrl-C (restart-safe: it resumes from its checkpoint)."""
    from streaming.runner import run_stream

    cfg = settings()
    _logging(cfg)
    try:
        summary = run_stream(cfg, until_idle_s=until_idle, report=lambda line: console.print(f"[dim]·[/dim] {line}"))
    except _known_errors() as exc:
        raise fail(exc) from None
    console.print(f"stopped after {summary.batches} batches, {summary.input_rows:,} records"
                  + (" (caught up)" if summary.caught_up else ""))


@stream_app.command("backfill")
def stream_backfill(
    source: Annotated[str, typer.Option(help="archive (raw archive) or kafka (topic from its start).")] = "archive",
    reconcile: Annotated[bool, typer.Option(help="Rebuild only customers touched by late events.")] = False,
) -> None:
    """Rebuild the feature history in batch Spark with the stream's code (idempotent)."""
    from streaming.backfill import run_backfill

    cfg = settings()
    _logging(cfg)
    if source not in ("archive", "kafka"):
        raise fail(f"--source must be archive or kafka, not {source!r}")
    try:
        with _progress() as progress:
            task = progress.add_task("days rebuilt", total=None)
            summary = run_backfill(cfg, source=source, reconcile=reconcile,
                                   progress=lambda done, total: progress.update(task, completed=done, total=total))
    except (*_known_errors(), FileNotFoundError) as exc:
        raise fail(exc) from None
    console.print(f"rebuilt {summary.customers:,} customers from {summary.events:,} events over {summary.days} days; "
                  f"{summary.offline_rows:,} offline rows")


def _logging(cfg: Settings) -> None:
    import logging

    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)


# --------------------------------------------------------------------------------------- train


class _TrainingProgress:
    """Shows each step of a training run as a line with a spinner, then its time."""

    def __init__(self) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.tasks: dict[str, int] = {}

    def step(self, name: str, detail: str = "") -> None:
        self.tasks[name] = self.progress.add_task(f"{name:<10} {detail}", total=1)

    def done(self, name: str, detail: str = "") -> None:
        self.progress.update(self.tasks[name], completed=1)


def _train_errors() -> tuple[type[Exception], ...]:
    from training.data import NoTrainingData
    from training.schedule import RunInProgress

    return (*_known_errors(), NoTrainingData, RunInProgress, FileNotFoundError)


def _train_once(cfg: Settings):  # noqa: ANN202 - TrainingOutcome
    from training.pipeline import train
    from training.schedule import exclusive_run

    reporter = _TrainingProgress()
    with exclusive_run(cfg), reporter.progress:
        return train(cfg, reporter=reporter)


def _print_outcome(outcome) -> None:  # noqa: ANN001 - TrainingOutcome
    from rich.table import Column

    table = Table(Column("model", no_wrap=True), "ROC-AUC", "macro-F1", "PR-AUC", "log loss", "ECE", "lift@10%",
                  title=f"test window: {outcome.rows['test']:,} rows (train {outcome.rows['train']:,}, "
                        f"validation {outcome.rows['validation']:,})")
    rows = dict(outcome.metrics)
    if outcome.champion_metrics is not None:
        rows["current champion"] = outcome.champion_metrics
    for name, m in rows.items():
        table.add_row(name, *(f"{m.get(k, float('nan')):.4f}" for k in
                              ("roc_auc", "macro_f1", "pr_auc", "log_loss", "ece", "decline_lift_top_decile")),
                      style="bold" if name == "ensemble" else None)
    console.print(table)
    colour = "green" if outcome.decision.promote else "yellow"
    console.print(f"[{colour}]version {outcome.version} -> {outcome.decision.alias}[/{colour}]: "
                  + "; ".join(outcome.decision.reasons))
    console.print(f"[dim]MLflow run {outcome.run_id}[/dim]")


@train_app.command("run")
def train_run(
    backend: Annotated[str | None, typer.Option(help="local or spark (default: training.backend).")] = None,
) -> None:
    """Train once: build the training set, fit, evaluate against baselines, register, and gate the champion."""
    cfg = settings()
    if backend is not None:
        if backend not in ("local", "spark"):
            raise fail(f"--backend must be local or spark, not {backend!r}")
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"backend": backend})})
    try:
        outcome = _train_once(cfg)
    except _train_errors() as exc:
        raise fail(f"training failed, the champion is unchanged: {exc}") from None
    _print_outcome(outcome)


@train_app.command("schedule")
def train_schedule(
    max_runs: Annotated[int | None, typer.Option(help="Stop after this many runs (default: run forever).")] = None,
) -> None:
    """Retrain on the cron schedule in training.schedule (UTC); runs never overlap; Ctrl-C stops."""
    from training.schedule import run_schedule

    cfg = settings()

    def once():  # noqa: ANN202
        outcome = _train_once(cfg)
        _print_outcome(outcome)
        return outcome

    try:
        run_schedule(cfg, once, max_runs=max_runs, on_event=lambda line: console.print(f"[dim]·[/dim] {line}"))
    except KeyboardInterrupt:
        console.print("schedule stopped")


@train_app.command("status")
def train_status() -> None:
    """The registered versions behind the champion and challenger aliases, with their test metrics."""
    from mlflow.exceptions import MlflowException

    from infra.reachability import ServiceUnavailable
    from model_contract import registry
    from model_contract.artifacts import CHALLENGER, CHAMPION

    cfg = settings()
    try:
        client = registry.client(cfg)
    except ServiceUnavailable as exc:
        raise fail(exc) from None
    table = Table("alias", "version", "created", "ROC-AUC", "macro-F1", "promotion")
    for alias in (CHAMPION, CHALLENGER):
        try:
            version = client.get_model_version_by_alias(cfg.mlflow.registered_model, alias)
        except MlflowException:
            table.add_row(alias, "-", "", "", "", "")
            continue
        metrics = client.get_run(version.run_id).data.metrics
        created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        table.add_row(alias, str(version.version), created, f"{metrics.get('roc_auc', float('nan')):.4f}",
                      f"{metrics.get('macro_f1', float('nan')):.4f}", version.tags.get("promotion", ""))
    console.print(table)


# --------------------------------------------------------------------------------------- serve

SCOPES_HELP = "Scopes: scores:read, model:read, admin (admin implies all)."


@serve_app.command("run")
def serve_run(
    host: Annotated[str | None, typer.Option(help="Listen address (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: serving.workers).")] = None,
) -> None:
    """Serve the REST API (OpenAPI at /docs) until Ctrl-C; the champion is hot-reloaded from the registry."""
    import os

    import uvicorn

    from infra.reachability import ServiceUnavailable, require_all
    from serving.main import serving_requirements

    cfg = settings()
    _logging(cfg)
    try:
        require_all(*serving_requirements(cfg))
    except ServiceUnavailable as exc:
        raise fail(exc) from None
    bind_host, bind_port = host or cfg.serving.host, port or cfg.serving.port
    os.environ.update(settings_environment(cfg))  # the factory in the worker reads the same settings
    console.print(f"scorer on http://{bind_host}:{bind_port}  (OpenAPI: /docs; a token: `activity serve token`)")
    uvicorn.run("serving.main:app_from_environment", factory=True, host=bind_host, port=bind_port,
                workers=workers or cfg.serving.workers, log_level="warning", access_log=False)


@serve_app.command("token")
def serve_token(
    subject: Annotated[str, typer.Option(help="Who the token is for (its client id).")] = "analyst",
    scope: Annotated[list[str] | None, typer.Option(help=f"Repeat for several. {SCOPES_HELP}")] = None,
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds (default: serving.token_ttl_s).")] = None,
) -> None:
    """Print a signed bearer token (JWT) for the scorer."""
    from serving.auth import issue_token

    print(issue_token(settings(), subject, scope or ["scores:read", "model:read"], ttl))


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Argument(help="A name for the key's holder.")],
    scope: Annotated[list[str] | None, typer.Option(help=f"Repeat for several. {SCOPES_HELP}")] = None,
) -> None:
    """Create an API key; it is printed once and stored only hashed."""
    from serving.auth import create_api_key

    try:
        print(create_api_key(settings(), name, scope or ["scores:read", "model:read"]))
    except ValueError as exc:
        raise fail(exc) from None


@key_app.command("list")
def key_list() -> None:
    """The API keys (ids, names, scopes; never the secrets)."""
    from serving.auth import list_api_keys

    table = Table("id", "name", "scopes", "created")
    for key in list_api_keys(settings()):
        table.add_row(str(key["id"]), str(key["name"]), " ".join(key["scopes"]), str(key.get("created", "")))
    console.print(table)


@key_app.command("revoke")
def key_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `activity serve key list`).")]) -> None:
    """Revoke an API key."""
    from serving.auth import revoke_api_key

    try:
        revoke_api_key(settings(), key_id)
    except (KeyError, ValueError) as exc:
        raise fail(exc) from None
    console.print(f"revoked {key_id}")


# -------------------------------------------------------------------------------------- schema


@schema_app.command("docs")
def schema_docs(
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the contract's reference (fields, rules, rejection codes) as Markdown."""
    from streaming.schema import render_docs

    text = render_docs()
    if output:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        print(text)


# ------------------------------------------------------------------------------ settings, demo


@app.command("settings")
def show_settings(
    reference: Annotated[bool, typer.Option(
        "--reference", help="Print every setting with its environment variable, default and description.")] = False,
) -> None:
    """Print the effective settings (after the YAML file and environment variables)."""
    if reference:
        from activity_settings import settings_reference

        print(settings_reference(), end="")
        return
    print(settings().model_dump_json(indent=2))


@app.command("up")
def up(
    customers: Annotated[int, typer.Option(help="Simulated population.")] = 2_000,
    history_days: Annotated[int, typer.Option(help="Days of history published on a fresh data directory.")] = 200,
    rate: Annotated[float, typer.Option(help="Live transactions per second from the simulated upstream.")] = 20.0,
    duration: Annotated[float | None, typer.Option(help="Stop by itself after this many seconds.")] = None,
    with_prometheus: Annotated[bool, typer.Option(
        "--with-prometheus", help="Also start a local Prometheus (Debian package) with the alert rules.")] = False,
) -> None:
    """The whole platform on the embedded default: broker, streaming job, scorer, retraining and monitoring
    schedulers, and a simulated upstream at a steady rate, with a live status line; Ctrl-C stops everything.

    Exit code 1 when a service logged an error while it ran."""
    from activity.up import UpFailed, run_up

    if rate <= 0:
        raise fail(f"--rate must be positive, not {rate}")
    if history_days < 150:
        raise fail("--history-days must be at least 150: the first champion is trained on that history")
    try:
        errors = run_up(settings(), console, customers=customers, history_days=history_days, rate=rate,
                        duration_s=duration, with_prometheus=with_prometheus)
    except (*_known_errors(), UpFailed) as exc:
        raise fail(exc) from None
    if errors:
        raise typer.Exit(1)


@app.command("demo")
def demo(
    customers: Annotated[int, typer.Option(help="Population size.")] = 2_000,
    days: Annotated[int, typer.Option(help="Days of history before the shift (at least 150 to train on).")] = 200,
    shift_days: Annotated[int, typer.Option(help="Days of the shifted population.")] = 28,
) -> None:
    """The platform's story on the embedded default, exiting by itself: simulate -> stream -> train -> promote ->
    score over REST -> shift the population -> drift alert -> retrain; a summary with figures and report paths."""
    from activity.demo import DemoFailed, run_demo

    if days < 150:
        raise fail("--days must be at least 150: training needs a 30-day horizon on both sides of several "
                   "weekly as_of dates, split into train, validation and test with gaps")
    try:
        run_demo(settings(), console, customers=customers, days=days, shift_days=shift_days)
    except (*_known_errors(), DemoFailed) as exc:
        raise fail(exc) from None


@app.command("bench")
def bench(
    only: Annotated[str | None, typer.Option(
        help="Comma-separated benchmarks to run: produce, ingest, model_quality, train, serve (default: all).")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Small sizes: a smoke run in minutes, labelled as such in the report.")] = False,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <data_dir>/bench/<UTC time>).")] = None,
) -> None:
    """Run the benchmarks under bench/, one after another, and write a report folder: report.md (figures against
    their targets, met or missed), PNG plots (throughput, freshness, latency, model quality) and a log per benchmark."""
    import os

    from activity.bench_report import run_report, select

    cfg = settings()
    try:
        names = select(only)
    except ValueError as exc:
        raise fail(exc) from None
    folder = out or cfg.home / "bench" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    env = ({k: v for k, v in os.environ.items() if not k.startswith("ACTIVITY_")} | settings_environment(cfg)
           | {"ACTIVITY_DATA_DIR": str(cfg.home)})  # the benchmarks run from the source tree, not this directory
    console.print(f"{'quick run of' if quick else 'running'} {', '.join(names)}; report in {folder}")
    with console.status("starting") as status:
        report, results = run_report(names, folder, quick=quick, env=env, progress=status.update,
                                     report=lambda line: console.print(f"[dim]·[/dim] {line}"))
    console.print(f"report: {report}")
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise fail(f"{', '.join(failed)} failed; the report has the exit code and the log's tail")


# ------------------------------------------------------------------------------------- monitor


@monitor_app.command("drift")
def monitor_drift(
    source: Annotated[str | None, typer.Option(
        help="Current window: predictions (customers scored in the last monitoring.drift_window_hours), "
             "snapshot (every customer as of the newest state) or auto [monitoring.drift_source].")] = None,
    retrain: Annotated[bool | None, typer.Option(
        "--retrain/--no-retrain", help="Start a training run when drifted [monitoring.retrain_on_drift].")] = None,
) -> None:
    """Drift of the current features and predictions against the champion's reference (Evidently + PSI).

    Saves the HTML report, logs it to MLflow (<experiment>-monitoring), exports Prometheus figures
    (<data_dir>/monitoring/drift.prom), posts alerts to monitoring.webhook_url, and applies the
    drift -> retraining policy.
    """
    from mlflow.exceptions import MlflowException

    from activity.retraining import drift_then_retrain
    from monitoring.drift import SOURCES, DriftError

    cfg = settings()
    if source is not None and source not in (*SOURCES, "auto"):
        raise fail(f"--source must be one of {', '.join((*SOURCES, 'auto'))}, not {source!r}")
    try:
        with console.status("drift") as status:
            outcome = drift_then_retrain(cfg, source=source, retrain=retrain, progress=lambda step: status.update(step))
    except (*_known_errors(), DriftError, MlflowException, OSError) as exc:
        raise fail(f"drift run failed: {exc}") from None
    _print_drift(outcome)


def _print_drift(outcome) -> None:  # noqa: ANN001 - monitoring.drift.DriftOutcome
    f = outcome.figures
    table = Table("feature", "drift score", "method", "PSI", "drifted", title=outcome.summary())
    for name in sorted(f.scores, key=lambda n: -f.psi[n]):
        table.add_row(name, f"{f.scores[name]:.3f}", f.methods[name], f"{f.psi[name]:.3f}",
                      "[red]yes[/red]" if name in f.drifted else "")
    table.add_row("(activity score)", f"{f.prediction_score:.3f}", f.prediction_method, "",
                  "[red]yes[/red]" if f.prediction_detected else "")
    console.print(table)
    for alert in outcome.alerts:
        console.print(f"[yellow]alert[/yellow] {alert.name}: {alert.summary}"
                      + ("" if outcome.alerts_delivered else " [red](webhook failed)[/red]"))
    if outcome.retrain:
        console.print(f"retraining: {outcome.retrain}")
    console.print(f"report: {outcome.report_path}  ·  MLflow run {outcome.run_id}  ·  {outcome.seconds:.1f} s")


@monitor_app.command("schedule")
def monitor_schedule(
    max_runs: Annotated[int | None, typer.Option(help="Stop after this many runs (default: run forever).")] = None,
) -> None:
    """Run drift, online quality, calibration and the estimate on their crons (monitoring.*_schedule).

    Serves the jobs' Prometheus metrics on 127.0.0.1:monitoring.metrics_port; Ctrl-C stops.
    """
    from prometheus_client import start_http_server

    from activity.retraining import drift_then_retrain
    from monitoring.calibration_job import run_calibration
    from monitoring.estimate_job import run_estimate
    from monitoring.quality import run_quality
    from training.schedule import CronJob, run_jobs

    cfg = settings()
    m = cfg.monitoring
    if m.metrics_port:
        try:
            start_http_server(m.metrics_port, addr=m.metrics_host)
        except OSError as exc:
            raise fail(f"cannot serve metrics on {m.metrics_host}:{m.metrics_port} (monitoring.metrics_host, "
                       f"monitoring.metrics_port): {exc}") from None
        console.print(f"metrics on http://{m.metrics_host}:{m.metrics_port}/metrics")
    jobs = [
        CronJob("drift", m.drift_schedule, lambda: drift_then_retrain(cfg).summary()),
        CronJob("quality", m.quality_schedule,
                lambda: f"{run_quality(cfg).matured:,} matured predictions scored"),
        CronJob("calibration", m.calibration_schedule,
                lambda: "; ".join(f"v{r.version}: {r.refit}" for r in run_calibration(cfg)) or "nothing matured"),
        CronJob("estimate", m.estimate_schedule,
                lambda: f"{len(run_estimate(cfg).groups)} groups estimated"),
    ]
    try:
        run_jobs(jobs, max_runs=max_runs, on_event=lambda line: console.print(f"[dim]·[/dim] {line}"))
    except KeyboardInterrupt:
        console.print("schedule stopped")


@monitor_app.command("estimate")
def monitor_estimate(
    source: Annotated[str | None, typer.Option(
        help="Answers: predictions (logged in the last monitoring.drift_window_hours), snapshot (the champion on "
             "every customer as of the newest state) or auto [monitoring.drift_source].")] = None,
) -> None:
    """Quality before the labels arrive: CBPE from the calibrated probabilities, per model version and A/B arm.

    Reports to Prometheus (<data_dir>/monitoring/estimate.prom), MLflow (<experiment>-monitoring) and the alert
    webhook (ActivityEstimatedQualityDrop, by monitoring.estimate_alert_auc_drop).
    """
    from mlflow.exceptions import MlflowException

    from activity.estimate_report import print_estimate
    from monitoring.drift import DriftError
    from monitoring.estimate import EstimateError
    from monitoring.estimate_job import EstimateJobError, run_estimate

    cfg = settings()
    if source is not None and source not in ("auto", "predictions", "snapshot"):
        raise fail(f"--source must be one of auto, predictions, snapshot, not {source!r}")
    try:
        report = run_estimate(cfg, source=source)
    except (*_known_errors(), EstimateJobError, EstimateError, DriftError, MlflowException, OSError) as exc:
        raise fail(f"estimate failed: {exc}") from None
    print_estimate(console, report)


@monitor_app.command("calibrate")
def monitor_calibrate() -> None:
    """Calibration on matured answers per version (ECE), and the monitor's calibration maps refit on them."""
    from activity.estimate_report import print_calibration
    from monitoring.calibration_job import run_calibration

    cfg = settings()
    try:
        results = run_calibration(cfg)
    except (*_known_errors(), OSError) as exc:
        raise fail(f"calibration failed: {exc}") from None
    print_calibration(console, results)


def _since(text: str | None, now: datetime) -> datetime | None:
    """``30d`` / ``12h`` before ``now``, or an ISO 8601 time (UTC when it has no offset)."""
    import re
    from datetime import timedelta

    if text is None:
        return None
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)([dh])", text.strip())
    if relative:
        amount = float(relative[1])
        return now - (timedelta(days=amount) if relative[2] == "d" else timedelta(hours=amount))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since must be like 30d, 12h or an ISO 8601 time, not {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@monitor_app.command("quality")
def monitor_quality(
    since: Annotated[str | None, typer.Option(
        help="Predictions logged since: 30d, 12h or an ISO 8601 time (default: the whole log).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the report as Markdown.")] = False,
) -> None:
    """Online quality: matured predictions against their realized outcomes, per model version and A/B arm.

    Reports to Prometheus (and <data_dir>/monitoring/quality.prom), MLflow (<experiment>-monitoring) and the alert
    webhook (when the champion's online macro-F1 falls too far below its test macro-F1).
    """
    from mlflow.exceptions import MlflowException

    from monitoring.quality import run_quality

    cfg = settings()
    now = datetime.now(UTC)
    try:
        report = run_quality(cfg, since=_since(since, now), now=now)
    except (*_known_errors(), MlflowException, OSError) as exc:
        raise fail(f"online quality failed: {exc}") from None
    if markdown:
        print(report.markdown(), end="")
        return
    _print_quality(report)


def _print_quality(report) -> None:  # noqa: ANN001 - monitoring.quality.QualityReport
    from activity.estimate_report import print_estimated_beside_realized
    from model_contract.labels import CLASSES

    def cell(values: dict[str, float], name: str) -> str:
        value = values.get(name, float("nan"))
        return "n/a" if value != value else f"{value:.4f}"

    through = report.matured_through
    console.print(f"[dim]{report.window}; as_of through {through or '-'} matured "
                  f"({report.horizon_days}-day horizon)[/dim]")
    console.print("[dim]prediction log: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in report.funnel.items())
                  + "[/dim]")
    if not report.groups:
        console.print("no prediction has matured yet: nothing to score")
    else:
        names = ["accuracy", "macro_precision", "macro_recall", "macro_f1", *[f"f1_{c}" for c in CLASSES], "roc_auc"]
        table = Table("version", "arm", "n", "accuracy", "precision", "recall", "macro-F1",
                      *[f"F1 {c}" for c in CLASSES], "ROC-AUC", title="online quality of matured predictions")
        for group in report.groups:
            values = group.values()
            cells = [cell(values, n) for n in names] if group.scored else \
                [f"too few (< {report.min_predictions})", *[""] * (len(names) - 1)]
            table.add_row(group.version, group.arm, f"{group.n:,}", *cells)
        console.print(table)
        print_estimated_beside_realized(console, report)
        console.print(f"A/B: {report.arm_test.summary()}" if report.arm_test is not None else
                      "A/B: no test (both arms need a scored group)")
    if report.champion_version is not None and report.champion_test_macro_f1 is not None:
        console.print(f"champion v{report.champion_version}: test macro-F1 {report.champion_test_macro_f1:.4f}")
    for alert in report.alerts:
        delivered = "" if report.alerts_delivered else " (webhook did not accept it)"
        console.print(f"[yellow]alert {alert.name}[/yellow]: {alert.summary}{delivered}")
    console.print(f"[dim]MLflow run {report.run_id}[/dim]")


if __name__ == "__main__":
    app()
