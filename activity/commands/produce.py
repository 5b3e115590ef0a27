"""`activity produce`: publish transactions to Kafka, simulated or replayed from a file.

Each command imports its part when it runs, so `activity --help` starts without loading it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from activity.commands.common import (
    USER_ERRORS,
    AmountColumn,
    CustomerColumn,
    HeaderOption,
    TimeColumn,
    TimeFormatOption,
    TimezoneOption,
    TransactionColumn,
    UserError,
    console,
    fail,
    progress_bar,
    settings,
)
from activity_settings import Settings

app = typer.Typer(help="Publish transactions to Kafka.", no_args_is_help=True)


@app.command("simulate")
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
    except USER_ERRORS as exc:
        raise fail(exc) from None


def _publish_simulation(cfg: Settings, population, first_day: int, rate: float | None) -> None:
    from streaming.publish import Pace, publish_simulation

    with progress_bar() as progress:
        task = progress.add_task(f"{population.size:,} customers, {population.days - first_day} days",
                                 total=population.expected_events(first_day))
        report = publish_simulation(cfg.kafka, population, first_day, Pace(rate=rate),
                                    progress=lambda n: progress.advance(task, n))
        progress.update(task, total=report.queued, completed=report.queued)
    _print_report(report, cfg.kafka.topics.transactions)


@app.command("replay")
def produce_replay(
    file: Annotated[Path, typer.Argument(help="CSV (.tsv, .txt, .gz), parquet or Excel (.xlsx) file of transactions.")],
    customer: CustomerColumn = "customer_id",
    time: TimeColumn = "event_time",
    amount: AmountColumn = "amount",
    transaction: TransactionColumn = None,
    currency: Annotated[str | None, typer.Option(help="Column with the currency.")] = None,
    merchant: Annotated[str | None, typer.Option(help="Column with the merchant id.")] = None,
    category: Annotated[str | None, typer.Option(help="Column with the merchant category.")] = None,
    channel: Annotated[str | None, typer.Option(help="Column with the channel.")] = None,
    default_currency: Annotated[str, typer.Option(help="Currency when no column is mapped.")] = "EUR",
    timezone: TimezoneOption = "UTC",
    time_format: TimeFormatOption = None,
    header: HeaderOption = True,
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
        table = read_transactions_file(file, mapping, ReplayDefaults(
            currency=default_currency, timezone=timezone, time_format=time_format, header=header))
        with progress_bar() as progress:
            task = progress.add_task(file.name, total=table.num_rows)
            report = publish_tables(cfg.kafka, [table], encode_replayed, Pace(rate=rate, speedup=speedup),
                                    progress=lambda n: progress.advance(task, n))
    except USER_ERRORS as exc:
        raise fail(exc) from None
    _print_report(report, cfg.kafka.topics.transactions)


def _print_report(report, topic: str) -> None:  # DeliveryReport
    table = Table("topic", "sent", "delivered", "failed", "seconds", "events/s", title="summary")
    failed = report.failed + report.undelivered
    table.add_row(topic, f"{report.queued:,}", f"{report.delivered:,}", f"{failed:,}",
                  f"{report.elapsed_s:.1f}", f"{report.rate:,.0f}")
    console.print(table)
    if failed:
        raise fail(f"{failed:,} messages were not delivered: {report.errors or 'flush timed out'}")
