"""The promotion gate's rules and the retraining schedule's guarantees (no overlap, failures survive)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from activity_settings import TrainingSettings, load_settings
from training.gate import decide
from training.schedule import RunInProgress, exclusive_run, next_fire, run_schedule

GOOD = {"roc_auc": 0.80, "macro_f1": 0.60, "ece": 0.02}
BASELINES = {"persistence": {"roc_auc": 0.5, "macro_f1": 0.2}, "heuristic": {"roc_auc": 0.7, "macro_f1": 0.5}}


def test_first_model_that_holds_the_guards_is_promoted() -> None:
    decision = decide(GOOD, BASELINES, None, TrainingSettings())
    assert decision.promote and decision.alias == "champion"
    assert "no champion yet" in decision.summary()


@pytest.mark.parametrize(("change", "reason"), [
    ({"roc_auc": 0.55}, "below the guard"),
    ({"ece": 0.3}, "calibration error"),
    ({"roc_auc": math.nan}, "below the guard"),
    ({"roc_auc": 0.69}, "does not beat baseline heuristic"),
])
def test_a_guard_failure_keeps_the_model_a_challenger(change: dict, reason: str) -> None:
    decision = decide(GOOD | change, BASELINES, None, TrainingSettings())
    assert not decision.promote and decision.alias == "challenger"
    assert reason in decision.summary()


def test_the_champion_must_be_beaten_on_the_chosen_metric() -> None:
    settings = TrainingSettings()
    assert not decide(GOOD, BASELINES, {"roc_auc": 0.80, "macro_f1": 0.5}, settings).promote  # a tie is not a win
    assert decide(GOOD, BASELINES, {"roc_auc": 0.79, "macro_f1": 0.7}, settings).promote
    by_f1 = TrainingSettings(promotion_metric="macro_f1")
    assert not decide(GOOD, BASELINES, {"roc_auc": 0.79, "macro_f1": 0.7}, by_f1).promote


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    return load_settings(data_dir=tmp_path, training={"schedule": "*/15 * * * *"})


def test_schedule_fires_on_the_cron_times_and_survives_a_failed_run(settings) -> None:
    clock = Clock(datetime(2026, 3, 1, 10, 2, tzinfo=UTC))
    fired: list[datetime] = []

    def run() -> None:
        fired.append(clock())
        if len(fired) == 1:
            raise RuntimeError("feature store unavailable")

    records = run_schedule(settings, run, max_runs=2, now=clock, sleep=clock.sleep, on_event=lambda _: None)
    assert fired == [datetime(2026, 3, 1, 10, 15, tzinfo=UTC), datetime(2026, 3, 1, 10, 30, tzinfo=UTC)]
    assert not records[0].ok and "feature store unavailable" in records[0].message
    assert "champion unchanged" in records[0].message
    assert records[1].ok


def test_runs_never_overlap(settings) -> None:
    clock = Clock(datetime(2026, 3, 1, 10, 14, 59, tzinfo=UTC))
    ran: list[int] = []
    with exclusive_run(settings):
        with pytest.raises(RunInProgress, match="already in progress"), exclusive_run(settings):
            pass
        records = run_schedule(settings, lambda: ran.append(1), max_runs=1, now=clock, sleep=clock.sleep,
                               on_event=lambda _: None)
    assert ran == [] and records[0].message.startswith("skipped")
    with exclusive_run(settings):  # released afterwards
        pass


def test_a_bad_cron_expression_fails_at_start_naming_the_setting() -> None:
    from activity_settings import SettingsError

    with pytest.raises(SettingsError, match=r"training\.schedule .*ACTIVITY_TRAINING__SCHEDULE"):
        load_settings(training={"schedule": "every day"})
    assert next_fire("0 3 * * *", datetime(2026, 3, 1, 4, 0, tzinfo=UTC)) == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


def test_several_jobs_fire_each_on_its_own_cron() -> None:
    from training.schedule import CronJob, run_jobs

    clock = Clock(datetime(2026, 3, 1, 10, 2, tzinfo=UTC))
    fired: list[tuple[str, datetime]] = []

    def job(name: str):
        def run() -> str:
            fired.append((name, clock()))
            if name == "quality":
                raise RuntimeError("no archive")
            return "ok"
        return run

    records = run_jobs([CronJob("drift", "*/20 * * * *", job("drift")),
                        CronJob("quality", "30 10 * * *", job("quality"), after_failure="nothing changed")],
                       max_runs=4, now=clock, sleep=clock.sleep, on_event=lambda _: None)
    at = lambda h, m: datetime(2026, 3, 1, h, m, tzinfo=UTC)  # noqa: E731
    assert fired == [("drift", at(10, 20)), ("quality", at(10, 30)), ("drift", at(10, 40)), ("drift", at(11, 0))]
    assert [r.job for r in records] == ["drift", "quality", "drift", "drift"]
    assert records[1].message == "failed, nothing changed: RuntimeError: no archive" and not records[1].ok
