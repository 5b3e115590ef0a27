"""Drift and retraining together: the drift job decides, this scheduler acts on its decision.

``monitoring`` never starts a training run; it returns a ``RetrainDecision``. Here, a decision
to start becomes one training run under the trainer's exclusive lock, recorded in the drift
state so the policy's minimum interval holds, and counted in ``activity_monitor_retrain_runs_total``.
A failed run leaves the champion as it was and the drift outcome still reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from activity_settings import Settings
from monitoring import metrics
from monitoring.drift import DriftOutcome, record_retrain_started, run_drift
from training.pipeline import train
from training.schedule import RunInProgress, exclusive_run

log = logging.getLogger(__name__)


def drift_then_retrain(settings: Settings, source: str | None = None, retrain: bool | None = None,
                       progress: Callable[[str], None] = lambda _step: None, now: datetime | None = None
                       ) -> DriftOutcome:
    """One drift run, then the training run its decision asks for; ``retrain`` overrides the policy's setting."""
    now = now or datetime.now(UTC)
    outcome = run_drift(settings, source=source, now=now, retrain=retrain, progress=progress)
    if outcome.decision is None or not outcome.decision.start:
        return outcome
    progress("drift detected: starting a training run (monitoring.retrain_on_drift)")
    record_retrain_started(settings, now)
    return replace(outcome, retrain=retrain_now(settings))


def retrain_now(settings: Settings) -> str:
    """One training run unless another is in progress; a one-line account of what came of it."""
    try:
        with exclusive_run(settings):
            trained = train(settings)
    except RunInProgress as exc:
        metrics.RETRAINS.labels("skipped").inc()
        return f"skipped: {exc}"
    except Exception as exc:  # a failed retraining leaves the champion; the drift run still reports
        log.exception("drift-triggered training failed")
        metrics.RETRAINS.labels("failed").inc()
        return f"failed, champion unchanged: {type(exc).__name__}: {exc}"
    metrics.RETRAINS.labels("done").inc()
    return f"done: {trained.decision.summary()}"
