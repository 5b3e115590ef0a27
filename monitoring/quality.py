"""`activity monitor quality`: how good were the scorer's answers, once we know what happened?

A prediction for ``(customer, as_of)`` has *matured* when its horizon has passed in the raw
archive: its outcome is then the training label, computed by the same code
(``model_contract.labels.label_activity_change`` on ``streaming.archive.daily_counts``), and the answer is
scored against it. The archive's latest event day may still be filling up, so it never counts:
a prediction has matured when ``as_of day + horizon_days <= latest archived day``, i.e. its
whole outcome window (``as_of day .. as_of day + horizon - 1``) lies in complete days.

What is scored: the answers (not the challenger's shadow scores) of a registered version (not
the class-prior, heuristic or single-member fallbacks, which are marked ``degraded``), one per
``(customer, as_of day, version, arm)`` (the latest logged), whose customer had been seen before
``as_of`` (training labels only those). Per ``(version, arm)``: accuracy, macro and per-class
precision / recall / F1 and one-vs-rest ROC-AUC, by ``model_contract.evaluate.evaluate`` (so the same
conventions as the test window: a per-class value with a zero denominator is NaN, and so is a
macro average over it). Groups with fewer than ``monitoring.quality_min_predictions`` are
reported as too small, not scored.

Between the arms (per arm, the scored version with the most matured predictions): a two-sided
two-proportion z-test on accuracy (pooled standard error; ``z > 0`` when the challenger is more
accurate) and a two-sided Mann-Whitney U test on the per-prediction log-loss
``-log p(realized class)`` (the probabilities, not only the decisions; U is the challenger's).

Everything above ``run_quality`` is pure (frames in, frames and dataclasses out).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from scipy.stats import mannwhitneyu, norm

from activity_settings import Settings
from model_contract import registry
from model_contract.artifacts import CHAMPION
from model_contract.evaluate import LOG_LOSS_FLOOR, Metrics, evaluate
from model_contract.labels import CLASSES, LabelPolicy, epoch_days, label_activity_change
from monitoring import metrics
from monitoring.alerts import Alert, notify
from monitoring.predictions import read_predictions
from streaming.archive import EmptyArchive, daily_counts

log = logging.getLogger(__name__)

ARMS = ("champion", "challenger")
KEY = ["customer_id", "as_of_day", "model_version", "arm"]  # one scored answer per key
PROBABILITIES = [f"p_{name}" for name in CLASSES]
# gauge label -> GroupQuality.values() name (activity_monitor_online_quality{metric=...})
GAUGE_METRICS = {"accuracy": "accuracy", "precision": "macro_precision", "recall": "macro_recall",
                 "macro_f1": "macro_f1", "roc_auc": "roc_auc"}
VALUES = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "roc_auc", "log_loss",
          *[f"{prefix}_{name}" for prefix in ("precision", "recall", "f1", "roc_auc", "share") for name in CLASSES])
TEST_METRIC = "macro_f1"  # the ensemble's test-window macro-F1: logged unprefixed by training.pipeline._log_run
ALERT_NAME = "ActivityOnlineQualityDrop"
CUSTOMER_CHUNK = 20_000  # customers labelled at once (bounds the customers x days matrix of the labeller)
TOLERANCE = 1e-12  # a drop of exactly the threshold does not alert
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_]")


# ------------------------------------------------------------------------------ the join


def matured(predictions: pd.DataFrame, daily: pd.DataFrame, policy: LabelPolicy) -> pd.DataFrame:
    """Scored answers whose horizon has passed, joined with their realized label.

    ``predictions`` as ``monitoring.predictions.read_predictions`` returns them; ``daily`` is
    ``customer_id, day, count`` (``streaming.archive.daily_counts``). Returns the prediction columns
    plus ``as_of_day`` (epoch day), ``previous``, ``next``, ``change`` and ``outcome`` (the
    realized class index; ``label`` stays the answered one). ``attrs["funnel"]`` counts what was
    dropped at each step, ``attrs["last_day"]`` is the latest archived day (None without any).
    """
    funnel: dict[str, int] = {"records": len(predictions)}
    frame = predictions[~predictions["shadow"].fillna(False).astype(bool)]
    funnel["shadow"] = funnel["records"] - len(frame)
    by_model = (frame["model_version"].notna() & frame["arm"].notna()
                & ~frame["degraded"].fillna(False).astype(bool))
    complete = np.isfinite(frame[PROBABILITIES].to_numpy(dtype=np.float64)).all(axis=1)
    funnel["fallback"] = int((~by_model).sum())
    funnel["incomplete"] = int((by_model & ~complete).sum())
    frame = frame[by_model & complete].copy()
    frame["model_version"] = frame["model_version"].astype(str)
    frame["as_of_day"] = _epoch_days(frame["as_of"])
    unique = frame.sort_values("logged_at", kind="stable").drop_duplicates(KEY, keep="last")
    funnel["duplicates"] = len(frame) - len(unique)
    last_day = int(daily["day"].max()) if len(daily) else None
    # the latest archived day may be partial: the outcome window (as_of day + 0 .. horizon - 1) must end before it
    horizon = policy.horizon_days
    ready = unique.iloc[0:0] if last_day is None else unique[unique["as_of_day"] + horizon <= last_day]
    funnel["not_matured"] = len(unique) - len(ready)
    outcomes = realized_outcomes(daily, ready, policy)
    joined = ready.merge(outcomes, on=["customer_id", "as_of_day"], how="inner", validate="many_to_one")
    funnel["no_history"] = len(ready) - len(joined)
    funnel["matured"] = len(joined)
    joined = joined.sort_values(["model_version", "arm", "customer_id", "as_of_day"], ignore_index=True)
    joined.attrs = {"funnel": funnel, "last_day": last_day, "horizon_days": policy.horizon_days}
    return joined


def realized_outcomes(daily: pd.DataFrame, requests: pd.DataFrame, policy: LabelPolicy,
                      chunk: int = CUSTOMER_CHUNK) -> pd.DataFrame:
    """The training label of each requested ``(customer_id, as_of_day)`` whose customer was seen before it.

    Columns ``customer_id, as_of_day, previous, next, change, outcome``; one row per pair.
    """
    columns = ["customer_id", "as_of_day", "previous", "next", "change", "outcome"]
    pairs = requests[["customer_id", "as_of_day"]].drop_duplicates()
    if pairs.empty or daily.empty:
        return pd.DataFrame({name: pd.Series(dtype=object if name == "customer_id" else np.float64)
                             for name in columns}).astype({"as_of_day": np.int64, "outcome": np.int64})
    customers = pairs["customer_id"].unique()
    parts = []
    for start in range(0, len(customers), chunk):
        some = customers[start:start + chunk]
        wanted = pairs[pairs["customer_id"].isin(some)]
        labels = label_activity_change(daily[daily["customer_id"].isin(some)],
                                       np.unique(wanted["as_of_day"].to_numpy(dtype=np.int64)), policy)
        labels = labels.rename(columns={"label_index": "outcome"})
        parts.append(wanted.merge(labels[columns], on=["customer_id", "as_of_day"], how="inner"))
    return pd.concat(parts, ignore_index=True)


def _epoch_days(stamps: pd.Series) -> pd.Series:
    """The as_of day of each timestamp, floored like the labels and the features are."""
    return pd.Series(epoch_days(stamps), index=stamps.index, dtype=np.int64)


# ---------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class GroupQuality:
    """One model version in one arm; ``metrics`` is None when the group is too small to score."""

    version: str
    arm: str
    n: int
    metrics: Metrics | None

    @property
    def scored(self) -> bool:
        return self.metrics is not None

    def values(self) -> dict[str, float]:
        """Flat figures (empty when not scored): headline, per-class and macro precision / recall."""
        m = self.metrics
        if m is None:
            return {}
        flat = {"accuracy": m.accuracy, "macro_precision": _macro(m.precision.values()),
                "macro_recall": _macro(m.recall.values()), "macro_f1": m.macro_f1, "roc_auc": m.roc_auc,
                "log_loss": m.log_loss}
        for prefix, per_class in (("precision", m.precision), ("recall", m.recall), ("f1", m.f1),
                                  ("roc_auc", m.roc_auc_per_class), ("share", m.share)):
            flat |= {f"{prefix}_{name}": float(value) for name, value in per_class.items()}
        return {name: float(value) for name, value in flat.items()}


@dataclass(frozen=True)
class ArmTest:
    """Champion arm against challenger arm (one version each); z and U favour the challenger when positive."""

    champion_version: str
    challenger_version: str
    n_champion: int
    n_challenger: int
    accuracy_champion: float
    accuracy_challenger: float
    z: float
    p_value: float  # two-proportion z-test on accuracy, two-sided
    log_loss_champion: float  # mean per-prediction log-loss
    log_loss_challenger: float
    mann_whitney_u: float  # the challenger's U on per-prediction log-loss
    mann_whitney_p_value: float  # two-sided

    def summary(self) -> str:
        return (f"challenger v{self.challenger_version} accuracy {self.accuracy_challenger:.4f} "
                f"(n={self.n_challenger}) vs champion v{self.champion_version} {self.accuracy_champion:.4f} "
                f"(n={self.n_champion}): "
                f"two-proportion z = {self.z:.3f}, p = {self.p_value:.4g}; per-prediction log-loss "
                f"{self.log_loss_challenger:.4f} vs {self.log_loss_champion:.4f}: Mann-Whitney "
                f"U = {self.mann_whitney_u:.1f}, p = {self.mann_whitney_p_value:.4g}")


@dataclass(frozen=True)
class QualityReport:
    groups: tuple[GroupQuality, ...]
    arm_test: ArmTest | None
    min_predictions: int
    horizon_days: int | None = None
    last_day: int | None = None  # the archive's latest (possibly partial) event day, epoch days
    funnel: Mapping[str, int] = field(default_factory=dict)
    window: str = ""
    champion_version: str | None = None
    champion_test_macro_f1: float | None = None
    alerts: tuple[Alert, ...] = ()
    alerts_delivered: bool = True
    run_id: str | None = None
    estimated: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # "version/arm" -> CBPE figures

    @property
    def matured(self) -> int:
        return sum(g.n for g in self.groups)

    @property
    def matured_through(self) -> date | None:
        """The latest as_of day whose predictions can have matured."""
        if self.last_day is None or self.horizon_days is None:
            return None
        return _date(self.last_day - self.horizon_days)

    def group(self, version: str | None, arm: str) -> GroupQuality | None:
        return next((g for g in self.groups if g.version == str(version) and g.arm == arm), None)

    def table(self) -> pd.DataFrame:
        """One row per group: version, arm, n, scored and the figures (NaN when not scored)."""
        names = list(VALUES)
        rows = [{"version": g.version, "arm": g.arm, "n": g.n, "scored": g.scored,
                 **{name: g.values().get(name, math.nan) for name in names}} for g in self.groups]
        return pd.DataFrame(rows, columns=["version", "arm", "n", "scored", *names])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN as null)."""
        test = None if self.arm_test is None else {k: _json_float(v) for k, v in vars(self.arm_test).items()}
        return {
            "window": self.window, "horizon_days": self.horizon_days, "min_predictions": self.min_predictions,
            "last_archived_day": None if self.last_day is None else str(_date(self.last_day)),
            "matured_through": None if self.matured_through is None else str(self.matured_through),
            "funnel": dict(self.funnel),
            "groups": [{"version": g.version, "arm": g.arm, "n": g.n, "scored": g.scored,
                        **{k: _json_float(v) for k, v in g.values().items()}} for g in self.groups],
            "arm_test": test,
            "champion": {"version": self.champion_version,
                         "test_macro_f1": _json_float(self.champion_test_macro_f1)},
            "alerts": [{"name": a.name, "summary": a.summary, "labels": a.labels} for a in self.alerts],
            "run_id": self.run_id,
        }

    def markdown(self, digits: int = 4) -> str:
        lines = ["# Online quality", ""]
        if self.window:
            lines.append(f"Window: {self.window}.")
        if self.last_day is None:
            lines.append("No archived events: no outcome is known yet.")
        else:
            lines.append(f"Outcomes from the archive through {_date(self.last_day - 1)} (its latest day, "
                         f"{_date(self.last_day)}, counts as partial): predictions with as_of up to "
                         f"{self.matured_through} have matured ({self.horizon_days}-day horizon).")
        if self.funnel:
            lines.append("Prediction log: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.funnel.items())
                         + ".")
        lines.append("")
        if not self.groups:
            lines.append("No prediction has matured yet: nothing to score.")
            return "\n".join(lines) + "\n"
        columns = ["accuracy", "macro_precision", "macro_recall", "macro_f1",
                   *[f"f1_{name}" for name in CLASSES], "roc_auc", "log_loss"]
        lines.append("| version | arm | n | " + " | ".join(columns) + " |")
        lines.append("|---|---|---:|" + "---:|" * len(columns))
        for g in self.groups:
            values = g.values()
            cells = [_cell(values[c], digits) for c in columns] if g.scored else \
                [f"too few (< {self.min_predictions})", *[""] * (len(columns) - 1)]
            lines.append(f"| {g.version} | {g.arm} | {g.n:,} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.extend(self.estimated_lines(digits))
        lines.append(f"A/B: {self.arm_test.summary()}." if self.arm_test is not None else
                     "A/B: no test (both arms need a scored group).")
        if self.champion_version is not None and self.champion_test_macro_f1 is not None:
            test_f1 = _cell(self.champion_test_macro_f1, digits)
            lines.append(f"Champion v{self.champion_version}: test macro-F1 {test_f1}.")
        for alert in self.alerts:
            lines.append(f"ALERT {alert.name}: {alert.summary}")
        return "\n".join(lines) + "\n"


    def estimated_lines(self, digits: int = 4) -> list[str]:
        """Estimated (from the answers' probabilities, before the labels) beside realized, per scored group."""
        rows = []
        for g in self.groups:
            estimated = self.estimated.get(f"{g.version}/{g.arm}")
            if estimated is None or not g.scored:
                continue
            values = g.values()
            rows.append(f"| {g.version} | {g.arm} | {_cell(estimated['estimated_roc_auc'], digits)} | "
                        f"{_cell(values['roc_auc'], digits)} | {_cell(estimated['estimated_macro_f1'], digits)} | "
                        f"{_cell(values['macro_f1'], digits)} |")
        if not rows:
            return []
        return ["| version | arm | estimated ROC-AUC | realized ROC-AUC | estimated macro-F1 | realized macro-F1 |",
                "|---|---|---:|---:|---:|---:|", *rows, ""]


def online_quality(joined: pd.DataFrame, min_predictions: int) -> QualityReport:
    """Per ``(model_version, arm)`` figures of ``matured``'s output and the test between the arms."""
    groups = []
    for (version, arm), rows in joined.groupby(["model_version", "arm"], sort=False):
        if len(rows) < min_predictions:
            groups.append(GroupQuality(str(version), str(arm), len(rows), None))
            continue
        y, probabilities, predicted = _arrays(rows)
        groups.append(GroupQuality(str(version), str(arm), len(rows), evaluate(y, probabilities, predicted)))
    groups.sort(key=lambda g: (_version_key(g.version), ARMS.index(g.arm) if g.arm in ARMS else len(ARMS), g.arm))
    attrs = joined.attrs or {}
    return QualityReport(groups=tuple(groups), arm_test=arm_test(joined, groups), min_predictions=min_predictions,
                         horizon_days=attrs.get("horizon_days"), last_day=attrs.get("last_day"),
                         funnel=dict(attrs.get("funnel", {})))


def arm_test(joined: pd.DataFrame, groups: list[GroupQuality] | tuple[GroupQuality, ...]) -> ArmTest | None:
    """The tests between each arm's scored version with the most matured predictions (None without both)."""
    picked = {}
    for arm in ARMS:
        candidates = [g for g in groups if g.arm == arm and g.scored]
        if not candidates:
            return None
        picked[arm] = max(candidates, key=lambda g: (g.n, _version_key(g.version)))
    losses, correct = {}, {}
    for arm, group in picked.items():
        rows = joined[(joined["model_version"] == group.version) & (joined["arm"] == arm)]
        y, probabilities, predicted = _arrays(rows)
        losses[arm] = per_prediction_log_loss(y, probabilities)
        correct[arm] = int(np.sum(y == predicted))
    champion, challenger = picked["champion"], picked["challenger"]
    z, p_value = two_proportion_z_test(correct["champion"], champion.n, correct["challenger"], challenger.n)
    u, u_p_value = mannwhitneyu(losses["challenger"], losses["champion"], alternative="two-sided")
    return ArmTest(champion_version=champion.version, challenger_version=challenger.version,
                   n_champion=champion.n, n_challenger=challenger.n,
                   accuracy_champion=correct["champion"] / champion.n,
                   accuracy_challenger=correct["challenger"] / challenger.n, z=z, p_value=p_value,
                   log_loss_champion=float(np.mean(losses["champion"])),
                   log_loss_challenger=float(np.mean(losses["challenger"])),
                   mann_whitney_u=float(u), mann_whitney_p_value=float(u_p_value))


def two_proportion_z_test(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float]:
    """``(z, two-sided p)`` for ``p_b - p_a`` with the pooled standard error; ``(0, 1)`` when it is zero."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both samples need at least one observation")
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    if se == 0.0:  # both all right or both all wrong: identical proportions
        return 0.0, 1.0
    z = (successes_b / n_b - successes_a / n_a) / se
    return float(z), float(2.0 * norm.sf(abs(z)))


def per_prediction_log_loss(y: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``-log p(realized class)`` per row, clipped like ``model_contract.evaluate.log_loss``."""
    true_class = probabilities[np.arange(len(y)), y]
    return -np.log(np.clip(true_class, LOG_LOSS_FLOOR, 1.0))


def f1_drop_alert(report: QualityReport, champion_version: str | None, test_macro_f1: float | None,
                  max_drop: float) -> Alert | None:
    """An alert when the champion (in the champion arm) scores more than ``max_drop`` macro-F1 below its test window."""
    group = report.group(champion_version, "champion") if champion_version is not None else None
    if group is None or group.metrics is None or test_macro_f1 is None:
        return None
    online = group.metrics.macro_f1
    if not (math.isfinite(online) and math.isfinite(test_macro_f1)):
        return None
    drop = test_macro_f1 - online
    if drop <= max_drop + TOLERANCE:
        return None
    return Alert(
        name=ALERT_NAME,
        summary=f"champion v{group.version}: online macro-F1 {online:.3f} is {drop:.3f} below its test "
                f"macro-F1 {test_macro_f1:.3f}",
        description=f"{group.n:,} matured predictions of the champion arm scored against their realized outcomes "
                    f"give macro-F1 {online:.4f}; the version's test window gave {test_macro_f1:.4f} "
                    f"(monitoring.quality_alert_f1_drop = {max_drop:g}). {report.window}".strip(),
        labels={"model_version": group.version, "arm": "champion"},
    )


def _arrays(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (rows["outcome"].to_numpy(dtype=np.int64), rows[PROBABILITIES].to_numpy(dtype=np.float64),
            rows["label"].to_numpy(dtype=np.int64))


def _macro(values: Any) -> float:
    values = [float(v) for v in values]
    return math.nan if any(math.isnan(v) for v in values) else float(np.mean(values))


def _version_key(version: str) -> tuple[int, int, str]:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _date(epoch_day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=int(epoch_day))


def _cell(value: float, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _json_float(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


def metric_name(version: str, arm: str, name: str) -> str:
    """The MLflow metric of one group's figure, e.g. ``v3_champion_macro_f1``."""
    return _METRIC_NAME.sub("_", f"v{version}_{arm}_{name}")


# ------------------------------------------------------------------------------------ the job


def run_quality(settings: Settings, since: datetime | None = None, now: datetime | None = None) -> QualityReport:
    """One online-quality run over the predictions logged in ``[since, now]`` (all logged when ``since`` is None).

    Reads the prediction log and the archive, scores, sets the Prometheus gauges, logs an MLflow run
    in the monitoring experiment, alerts on a champion macro-F1 drop; returns the report (with the
    run id and the alerts). No matured prediction is a report with no groups, not an error.
    """
    from monitoring.estimate_job import beside_realized  # deferred: estimate_job imports this module
    now = now or datetime.now(UTC)
    t = settings.training
    policy = LabelPolicy(horizon_days=t.horizon_days, decline_below=t.decline_below, growth_above=t.growth_above)
    predictions = read_predictions(settings.kafka, since)
    predictions = predictions[predictions["logged_at"] <= pd.Timestamp(now)]
    try:
        daily = daily_counts(settings)
    except EmptyArchive:  # nothing archived yet: no outcome is known
        daily = pd.DataFrame({"customer_id": pd.Series(dtype=object), "day": pd.Series(dtype=np.int64),
                              "count": pd.Series(dtype=np.int64)})
    joined = matured(predictions, daily, policy)
    window = f"predictions logged {since.isoformat() if since else 'since the start of the log'} .. {now.isoformat()}"
    report = replace(online_quality(joined, settings.monitoring.quality_min_predictions), window=window,
                     estimated=beside_realized(joined, settings.monitoring.quality_min_predictions))
    export_gauges(report)
    metrics.write_textfile(settings, "quality", metrics.QUALITY_METRICS)
    champion_version, test_f1 = champion_test_metric(settings)
    alert = f1_drop_alert(report, champion_version, test_f1, settings.monitoring.quality_alert_f1_drop)
    report = replace(report, champion_version=champion_version, champion_test_macro_f1=test_f1,
                     alerts=() if alert is None else (alert,))
    report = replace(report, run_id=log_run(settings, report, since, now))
    delivered = notify(settings, list(report.alerts))
    log.info("online quality: %d matured predictions in %d groups; run %s", report.matured, len(report.groups),
             report.run_id)
    return replace(report, alerts_delivered=delivered)


def export_gauges(report: QualityReport) -> None:
    """The report's figures on the ``activity_monitor_online_quality*`` gauges (groups of earlier runs removed)."""
    with warnings.catch_warnings():  # importing feast sets PROMETHEUS_MULTIPROC_DIR; these jobs are one process
        warnings.filterwarnings("ignore", "Clearing labels has not been implemented", UserWarning)
        metrics.QUALITY.clear()
        metrics.QUALITY_SAMPLES.clear()
    for group in report.groups:
        metrics.QUALITY_SAMPLES.labels(group.version, group.arm).set(group.n)
        values = group.values()
        for label, name in GAUGE_METRICS.items():
            if name in values and math.isfinite(values[name]):
                metrics.QUALITY.labels(group.version, group.arm, label).set(values[name])
    metrics.QUALITY_ARM_P_VALUE.set(math.nan if report.arm_test is None else report.arm_test.p_value)
    metrics.QUALITY_LAST_RUN.set(time.time())


def champion_test_metric(settings: Settings) -> tuple[str | None, float | None]:
    """The registered champion's version and its run's test macro-F1 ((None, None) without a champion)."""
    client = registry.client(settings)
    try:
        version = client.get_model_version_by_alias(settings.mlflow.registered_model, CHAMPION)
    except MlflowException:
        return None, None
    if version.run_id is None:  # registered outside any run: no test figure
        return str(version.version), None
    value = client.get_run(version.run_id).data.metrics.get(TEST_METRIC)
    return str(version.version), None if value is None else float(value)


def log_run(settings: Settings, report: QualityReport, since: datetime | None, now: datetime) -> str:
    """The report as a run of the monitoring experiment: params, per-group metrics, the table as artifacts."""
    client = registry.client(settings)
    experiment = registry.experiment_id(settings, metrics.monitoring_experiment(settings))
    run = client.create_run(experiment, run_name=f"quality {now:%Y-%m-%d %H:%M}", tags={
        "job": "quality", "alerts": ",".join(a.name for a in report.alerts) or "none",
        **({"champion_version": report.champion_version} if report.champion_version else {})})
    run_id = run.info.run_id
    try:
        params = {"window": report.window, "since": since.isoformat() if since else "start", "until": now.isoformat(),
                  "horizon_days": report.horizon_days, "decline_below": settings.training.decline_below,
                  "growth_above": settings.training.growth_above, "min_predictions": report.min_predictions,
                  "last_archived_day": None if report.last_day is None else str(_date(report.last_day)),
                  "matured_through": str(report.matured_through)}
        figures: dict[str, float] = {"matured_predictions": float(report.matured),
                                     **{f"log_{k}": float(v) for k, v in report.funnel.items()}}
        for group in report.groups:
            figures[metric_name(group.version, group.arm, "n")] = float(group.n)
            figures |= {metric_name(group.version, group.arm, k): v for k, v in group.values().items()}
            estimated = report.estimated.get(f"{group.version}/{group.arm}", {})
            figures |= {metric_name(group.version, group.arm, k): v for k, v in estimated.items()}
        if report.arm_test is not None:
            test = report.arm_test
            figures |= {"arm_test_z": test.z, "arm_test_p_value": test.p_value,
                        "arm_test_mann_whitney_u": test.mann_whitney_u,
                        "arm_test_mann_whitney_p_value": test.mann_whitney_p_value}
        if report.champion_test_macro_f1 is not None:
            figures["champion_test_macro_f1"] = report.champion_test_macro_f1
        stamp = int(now.timestamp() * 1000)
        finite = [Metric(k, float(v), stamp, 0) for k, v in figures.items() if math.isfinite(v)]
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        for start in range(0, len(finite), 1000):
            client.log_batch(run_id, metrics=finite[start:start + 1000])
        client.log_text(run_id, report.table().to_csv(index=False), "quality/groups.csv")
        client.log_text(run_id, json.dumps(report.as_dict(), indent=2), "quality/report.json")
        client.log_text(run_id, report.markdown(), "quality/report.md")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


