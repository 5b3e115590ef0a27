"""Scheduled retraining: a cron expression, runs that never overlap, failures that leave the champion alone.

The lock is an advisory ``flock`` on a file under the data directory, taken by every run
(scheduled or by hand), so two schedulers, or a manual run during a scheduled one, never train
at the same time; the second one is skipped and says why.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from croniter import croniter

from activity_settings import ActivityError, Settings

log = logging.getLogger(__name__)


class RunInProgress(ActivityError, RuntimeError):
    """Another training run holds the lock."""


def lock_path(settings: Settings) -> Path:
    path = settings.home / "training" / "train.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def exclusive_run(settings: Settings) -> Iterator[None]:
    """Hold the training lock for the duration, or raise ``RunInProgress`` at once."""
    path = lock_path(settings)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunInProgress(f"a training run is already in progress ({holder}); lock {path}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class RunRecord:
    started: datetime
    ok: bool
    message: str
    job: str = "training"


@dataclass(frozen=True)
class CronJob:
    """A job fired at each time of a cron expression (UTC); ``run`` returns a one-line account."""

    name: str
    expression: str
    run: Callable[[], str]
    after_failure: str = ""  # what a failure leaves, told with it (e.g. "champion unchanged")


def next_fire(expression: str, after: datetime) -> datetime:
    return croniter(expression, after).get_next(datetime)


def run_jobs(jobs: list[CronJob], *, max_runs: int | None = None,
             now: Callable[[], datetime] = lambda: datetime.now(UTC),
             sleep: Callable[[float], None] = time.sleep,
             on_event: Callable[[str], None] = log.info) -> list[RunRecord]:
    """Fire each job at its cron times until ``max_runs`` runs happened in all (forever when None).

    Jobs due at the same time run one after the other. A failing run is recorded and reported; the
    schedule goes on. Missed fire times (the machine slept, a run took longer) are not replayed.
    """
    records: list[RunRecord] = []
    start = now()
    fires = {job.name: next_fire(job.expression, start) for job in jobs}
    for job in jobs:
        on_event(f"next {job.name} run at {fires[job.name]:%Y-%m-%d %H:%M} UTC ({job.expression})")
    while max_runs is None or len(records) < max_runs:
        job = min(jobs, key=lambda j: fires[j.name])
        while (wait := (fires[job.name] - now()).total_seconds()) > 0:
            sleep(min(wait, 60.0))
        started = now()
        try:
            record = RunRecord(started, True, job.run(), job.name)
        except RunInProgress as exc:
            record = RunRecord(started, False, f"skipped: {exc}", job.name)
        except Exception as exc:  # a failed run must not stop the schedule
            log.exception("%s run failed", job.name)
            left = f", {job.after_failure}" if job.after_failure else ""
            record = RunRecord(started, False, f"failed{left}: {type(exc).__name__}: {exc}", job.name)
        records.append(record)
        on_event(f"{job.name} run " + ("finished: " if record.ok else "") + record.message)
        fires[job.name] = next_fire(job.expression, now())
        on_event(f"next {job.name} run at {fires[job.name]:%Y-%m-%d %H:%M} UTC ({job.expression})")
    return records


def run_schedule(settings: Settings, run: Callable[[], Any], *, max_runs: int | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] = time.sleep,
                 on_event: Callable[[str], None] = log.info) -> list[RunRecord]:
    """Retrain at each time of ``training.schedule`` (UTC) under the training lock.

    A run that finds the lock held is skipped; a failed run leaves the champion unchanged.
    """
    def locked() -> str:
        with exclusive_run(settings):
            outcome = run()
        return str(getattr(getattr(outcome, "decision", None), "summary", lambda: "")())

    job = CronJob("training", settings.training.schedule, locked, after_failure="champion unchanged")
    return run_jobs([job], max_runs=max_runs, now=now, sleep=sleep, on_event=on_event)
