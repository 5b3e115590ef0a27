"""Calibration that holds in production: checked on matured labels, refit on a schedule.

The estimate of quality before the labels arrive (``monitoring.estimate``) is only as good as
the champion's probabilities. The champion is calibrated once, on its validation window; the
population it answers moves on. So the monitor keeps its own calibration map per model version:
a multinomial logistic regression on the log-probabilities (matrix scaling, the same form as the
trainer's stacker), refit on the latest matured answers (``monitoring.calibration_window_days``
of ``as_of`` days whose outcomes are known). The estimate reads the champion's probabilities
through it; the scorer's answers are untouched (a new calibration of the served model is a new
training run, through the gate).

Pure: probabilities and outcomes in, a map and figures out; the job stores maps as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activity_settings import ActivityError
from model_contract.evaluate import calibration_error, log_loss, top_label_ece
from model_contract.labels import CLASSES

N_CLASSES = len(CLASSES)
FLOOR = 1e-6  # probabilities are clipped here before the log, as the trainer's stacker does


class CalibrationError(ActivityError, ValueError):
    """Outcomes too few or too one-sided to fit a map; the message says what is missing."""


@dataclass(frozen=True)
class CalibrationMap:
    """``softmax(log(p) @ coef.T + intercept)``; the identity map leaves probabilities as they are."""

    coef: np.ndarray  # (classes, classes)
    intercept: np.ndarray  # (classes,)
    rows: int = 0  # matured answers it was fit on (0: identity)
    fitted_through: str = ""  # the latest as_of day of those answers

    @classmethod
    def identity(cls) -> CalibrationMap:
        return cls(np.eye(N_CLASSES), np.zeros(N_CLASSES))

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), FLOOR, 1.0)) @ self.coef.T
        logits = logits + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def as_dict(self) -> dict[str, object]:
        return {"coef": self.coef.tolist(), "intercept": self.intercept.tolist(), "rows": self.rows,
                "fitted_through": self.fitted_through, "classes": list(CLASSES)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> CalibrationMap:
        if data.get("classes") != list(CLASSES):
            raise CalibrationError(f"a calibration map over {data.get('classes')} does not fit classes {CLASSES}")
        rows = data.get("rows", 0)
        if not isinstance(rows, int | float | str):
            raise CalibrationError(f"a calibration map's rows must be a number, not {rows!r}")
        return cls(np.asarray(data["coef"], dtype=np.float64), np.asarray(data["intercept"], dtype=np.float64),
                   int(rows), str(data.get("fitted_through", "")))


def fit_calibration(probabilities: np.ndarray, outcomes: np.ndarray, min_rows: int, fitted_through: str = ""
                    ) -> CalibrationMap:
    """The map that makes ``probabilities`` match ``outcomes`` (class indices) best, by log loss."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(outcomes, dtype=np.int64)
    if len(y) < min_rows:
        raise CalibrationError(f"{len(y)} matured answers, fewer than monitoring.calibration_min_rows = {min_rows}")
    present = np.unique(y)
    if len(present) < N_CLASSES:
        missing = [CLASSES[k] for k in range(N_CLASSES) if k not in present]
        raise CalibrationError(f"no matured answer turned out {', '.join(missing)}: a map needs every class")
    model = LogisticRegression(C=100.0, max_iter=2_000)
    model.fit(np.log(np.clip(np.asarray(probabilities, dtype=np.float64), FLOOR, 1.0)), y)
    return CalibrationMap(model.coef_.copy(), model.intercept_.copy(), len(y), fitted_through)


@dataclass(frozen=True)
class CalibrationCheck:
    """How well probabilities matched matured outcomes, before and after a map."""

    rows: int
    ece: float  # top-label ECE of the raw probabilities
    classwise_ece: float
    log_loss: float
    ece_mapped: float
    log_loss_mapped: float

    def values(self) -> dict[str, float]:
        return dict(vars(self)) | {"rows": float(self.rows)}


def classwise_ece(y: np.ndarray, probabilities: np.ndarray) -> float:
    """The mean over classes of each class's one-vs-rest ECE."""
    return float(np.mean([calibration_error(probabilities[:, k], (y == k).astype(np.float64))
                          for k in range(N_CLASSES)]))


def check_calibration(probabilities: np.ndarray, outcomes: np.ndarray, calibration: CalibrationMap
                      ) -> CalibrationCheck:
    p, y = np.asarray(probabilities, dtype=np.float64), np.asarray(outcomes, dtype=np.int64)
    mapped = calibration.apply(p)
    return CalibrationCheck(rows=len(y), ece=top_label_ece(y, p), classwise_ece=classwise_ece(y, p),
                            log_loss=log_loss(y, p), ece_mapped=top_label_ece(y, mapped),
                            log_loss_mapped=log_loss(y, mapped))


def map_path(directory: Path, version: str) -> Path:
    return directory / f"v{version}.json"


def load_map(directory: Path, version: str) -> CalibrationMap:
    """The stored map of ``version``; the identity when none was fit yet."""
    path = map_path(directory, version)
    if not path.exists():
        return CalibrationMap.identity()
    return CalibrationMap.from_dict(json.loads(path.read_text()))


def save_map(directory: Path, version: str, calibration: CalibrationMap) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = map_path(directory, version)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(calibration.as_dict(), indent=2))
    tmp.replace(path)
    return path
