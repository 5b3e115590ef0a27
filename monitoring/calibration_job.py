"""`activity monitor calibrate`: check each version's calibration on matured answers and refit its map.

The answers whose horizon has passed are joined with their realized outcomes exactly as
``monitor quality`` joins them (``monitoring.quality.matured``). Per model version, the latest
``monitoring.calibration_window_days`` of matured ``as_of`` days: the top-label ECE of the raw
probabilities and through the current map, then a new map fit on them (kept when the fit has
enough answers of every class) in ``<data_dir>/monitoring/calibration/v<version>.json``, which
``monitor estimate`` reads. Run on ``monitoring.calibration_schedule`` by ``monitor schedule``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from activity_settings import Settings
from model_contract.labels import LabelPolicy
from monitoring import metrics
from monitoring.calibration import (
    CalibrationCheck,
    CalibrationError,
    check_calibration,
    fit_calibration,
    load_map,
    save_map,
)
from monitoring.estimate_job import PROBABILITIES, calibration_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionCalibration:
    version: str
    check: CalibrationCheck  # of the answers in the window, before the refit
    refit: str  # what happened: "refit on N answers through DAY" or why not


def latest_window(joined: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """The matured answers of the latest ``window_days`` matured as_of days."""
    if joined.empty:
        return joined
    last = int(joined["as_of_day"].max())
    return joined[joined["as_of_day"] > last - window_days]


def calibrate_versions(joined: pd.DataFrame, settings: Settings) -> list[VersionCalibration]:
    """Per version: the check of its current map on the latest window, and the refit map stored."""
    monitoring = settings.monitoring
    directory = calibration_dir(settings)
    results = []
    for version, rows in joined.groupby("model_version", sort=True):
        rows = latest_window(rows, monitoring.calibration_window_days)
        probabilities = rows[PROBABILITIES].to_numpy(dtype=np.float64)
        outcomes = rows["outcome"].to_numpy(dtype=np.int64)
        check = check_calibration(probabilities, outcomes, load_map(directory, str(version)))
        through = str(date(1970, 1, 1) + timedelta(days=int(rows["as_of_day"].max())))
        try:
            fitted = fit_calibration(probabilities, outcomes, monitoring.calibration_min_rows, through)
        except CalibrationError as exc:
            results.append(VersionCalibration(str(version), check, f"kept the current map: {exc}"))
            continue
        save_map(directory, str(version), fitted)
        results.append(VersionCalibration(str(version), check, f"refit on {fitted.rows:,} answers through {through}"))
    return results


def run_calibration(settings: Settings, now: datetime | None = None) -> list[VersionCalibration]:
    """One calibration run over the prediction log's matured answers; gauges set, maps stored."""
    from monitoring.predictions import read_predictions
    from monitoring.quality import matured
    from streaming.archive import EmptyArchive, daily_counts

    now = now or datetime.now(UTC)
    t, monitoring = settings.training, settings.monitoring
    policy = LabelPolicy(horizon_days=t.horizon_days, decline_below=t.decline_below, growth_above=t.growth_above)
    since = now - timedelta(days=t.horizon_days + monitoring.calibration_window_days + 2)
    predictions = read_predictions(settings.kafka, since=since)
    try:
        daily = daily_counts(settings)
    except EmptyArchive:
        return []
    results = calibrate_versions(matured(predictions, daily, policy), settings)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Clearing labels has not been implemented", UserWarning)
        metrics.CALIBRATION_ECE.clear()
    for result in results:
        metrics.CALIBRATION_ECE.labels(result.version, "raw").set(result.check.ece)
        metrics.CALIBRATION_ECE.labels(result.version, "mapped").set(result.check.ece_mapped)
        metrics.CALIBRATION_ROWS.labels(result.version).set(result.check.rows)
        log.info("calibration v%s: ECE %.4f raw, %.4f mapped; %s", result.version, result.check.ece,
                 result.check.ece_mapped, result.refit)
    metrics.write_textfile(settings, "calibration", (metrics.CALIBRATION_ECE, metrics.CALIBRATION_ROWS))
    return results
