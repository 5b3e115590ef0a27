"""Estimated quality (CBPE) against realized quality, on a simulated population with known shifts.

A population is simulated; a champion is trained on its first months like ``activity train run``
trains one, then serves: every day a sample of customers is scored (a day of the prediction log),
the monitor's calibration map is refit on the answers whose horizon has passed
(``monitoring.calibration``), and ``monitoring.estimate`` estimates the day's ROC-AUC from the
probabilities alone, with ``monitor estimate``'s alert rule (``monitoring.estimate_alert_auc_drop``
below the champion's test ROC-AUC). Once the horizon has passed, the same answers are scored
against their realized labels. The monitored period starts once the first calibration map has
half a window of matured answers. Three scenarios, from the same day on (``shift_day`` days into
the monitored period) moving ``--shift-share`` of the day's scored customers to a group of the
same size (40 % of the population, chosen by the features alone: a covariate shift):

- ``harmful``: customers with a middling last month (30th-70th percentile of ``tx_count_30d``),
  whose next month the model is least sure about: its answers get worse;
- ``harmless``: the customers who shop at night most (top 40 % of ``night_share_90d``), a feature
  the model barely uses: the answers are as good as before;
- ``none``: no shift.

    python -m bench.estimate [--quick] [--customers 4000] [--shift-share 1.0] [--seed 42]

Figures go to stdout, ending with one JSON line ``{"estimated_auc_abs_error", "days_to_detect_estimated",
"days_to_detect_realized", "false_alarms"}``. The error is the largest |estimated - realized| ROC-AUC of
a week's pooled answers (a week never straddles the shift) over every scenario; a day's detection
counts the day whose answers showed it (the realized figure is known a horizon and a day later).
Targets: error <= 0.03; the harmful shift detected within 1 day by the estimate; no alert in the
harmless and no-shift scenarios, nor before the shift.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from activity_settings import MonitoringSettings, load_settings
from bench.common import log, machine, print_result
from bench.estimate_world import Champion, World, train_champion
from features.transform import FEATURE_NAMES
from model_contract.evaluate import evaluate
from model_contract.labels import LabelPolicy
from model_contract.reference import bin_edges, bin_shares, psi
from monitoring.calibration import CalibrationError, CalibrationMap, fit_calibration
from monitoring.drift_share import drift_shares
from monitoring.estimate import estimate, estimate_alert
from training.model import ModelParams

SCENARIOS = ("none", "harmful", "harmless")
# Each shifted scenario's group, 40 % of the day's customers by their rank in one feature: those with a
# middling last month (the model is least sure what they do next), or those who shop at night most (the
# model barely uses the night share).
GROUPS = {"harmful": "tx_count_30d", "harmless": "night_share_90d"}
GROUP_RANKS = {"harmful": (0.3, 0.7), "harmless": (0.6, 1.0)}


@dataclass(frozen=True)
class Size:
    customers: int
    train_days: int
    monitor_days: int
    shift_day: int
    daily: int
    trees: int


SIZES = {"full": Size(4_000, 240, 56, 28, 1_000, 120), "quick": Size(2_500, 210, 50, 25, 800, 80)}


def scored_rows(features: pd.DataFrame, scenario: str, shifted: bool, size: Size, share: float, seed: int, day: int
                ) -> np.ndarray:
    """Positions of the customers scored on ``day``: a uniform sample, a share from the scenario's group once shifted.

    The groups are chosen by the features alone (what the model sees), so the relation between
    features and outcomes stays what it was: a covariate shift, the case CBPE is built for.
    """
    rng = np.random.default_rng([seed, SCENARIOS.index(scenario), day])
    moved = int(round(share * size.daily)) if scenario != "none" and shifted else 0
    if not moved:
        return rng.choice(len(features), size=size.daily, replace=False)
    order = np.lexsort((rng.random(len(features)), features[GROUPS[scenario]].to_numpy()))  # ties broken at random
    low, high = GROUP_RANKS[scenario]
    group = order[int(low * len(order)):int(high * len(order))]
    from_group = rng.choice(group, size=moved, replace=False)
    rest = rng.choice(np.setdiff1d(np.arange(len(features)), from_group), size=size.daily - moved, replace=False)
    return np.concatenate([from_group, rest])


def calibration_for(day: int, served: list[Answers], policy: LabelPolicy, window_days: int, min_rows: int
                    ) -> CalibrationMap:
    """The monitor's map on ``day``: refit on the answers whose outcomes are known by then (the last window)."""
    known = [a for a in served if day - policy.horizon_days - window_days <= a.day <= day - policy.horizon_days - 1]
    if not known:
        return CalibrationMap.identity()
    try:
        return fit_calibration(np.concatenate([a.probabilities for a in known]),
                               np.concatenate([a.outcomes for a in known]), min_rows)
    except CalibrationError:
        return CalibrationMap.identity()


@dataclass(frozen=True)
class Answers:
    """One day's answers: the champion's probabilities and decisions, the monitor's mapped probabilities, outcomes."""

    day: int
    probabilities: np.ndarray
    mapped: np.ndarray
    decided: np.ndarray
    outcomes: np.ndarray


def served_days(world: World, size: Size, policy: LabelPolicy, monitoring: MonitoringSettings) -> list[int]:
    """The epoch days the champion answers on: from the end of its training data to the end of the monitored period."""
    served_from = world.first_day + size.train_days
    return list(range(served_from, served_from + warm_up_days(policy, monitoring) + size.monitor_days))


def run_scenario(world: World, champion: Champion, populations: dict[int, pd.DataFrame], scenario: str, size: Size,
                 share: float, policy: LabelPolicy, monitoring: MonitoringSettings, seed: int) -> pd.DataFrame:
    """One row per monitored day: estimate, alert, realized figure, drift shares; ``attrs["answers"]``: the days."""
    days = sorted(populations)
    start = days[0] + warm_up_days(policy, monitoring)
    shift_from = start + size.shift_day
    labels = world.labels(np.array(days), policy)
    reference = champion.reference
    edges = {name: bin_edges(reference[name].to_numpy()) for name in FEATURE_NAMES}
    reference_shares = {name: bin_shares(reference[name].to_numpy(), edges[name]) for name in FEATURE_NAMES}
    rows: list[dict[str, object]] = []
    served: list[Answers] = []
    for day, population in populations.items():
        features = population.iloc[scored_rows(population, scenario, day >= shift_from, size, share, seed, day)]
        probabilities = champion.model.predict_proba(features[list(FEATURE_NAMES)].to_numpy(dtype=np.float32))
        decided = np.argmax(probabilities * champion.model.decision_weights, axis=1)
        outcomes = features[["customer_id"]].assign(as_of_day=day).merge(
            labels[["customer_id", "as_of_day", "label_index"]], on=["customer_id", "as_of_day"], how="left"
        )["label_index"].to_numpy()
        calibration = calibration_for(day, served, policy, monitoring.calibration_window_days,
                                      monitoring.calibration_min_rows)
        answers = Answers(day, probabilities, calibration.apply(probabilities), decided, outcomes)
        served.append(answers)
        if day < start:
            continue
        estimated = estimate(answers.mapped, decided, seed=day)
        alert = estimate_alert(estimated, "bench", "champion", champion.test.roc_auc,
                               monitoring.estimate_alert_auc_drop)
        psi_values = {name: psi(reference_shares[name], bin_shares(features[name].to_numpy(), edges[name]))
                      for name in FEATURE_NAMES}
        shares = drift_shares({name: value >= monitoring.psi_threshold for name, value in psi_values.items()},
                              champion.importances, monitoring.time_driven_features)
        realized = evaluate(outcomes, probabilities, decided)
        rows.append({"scenario": scenario, "day": day - start, "shifted": day >= shift_from,
                     "estimated_auc": estimated.roc_auc, "band_low": estimated.roc_auc_band.low,
                     "band_high": estimated.roc_auc_band.high, "alert": alert is not None,
                     "realized_auc": realized.roc_auc, "estimated_f1": estimated.macro_f1,
                     "realized_f1": realized.macro_f1, "drift_share": shares.unweighted,
                     "weighted_drift_share": shares.weighted, "calibration_rows": calibration.rows})
    frame = pd.DataFrame(rows)
    frame.attrs["answers"] = [a for a in served if a.day >= start]
    frame.attrs["start"] = start
    return frame


def warm_up_days(policy: LabelPolicy, monitoring: MonitoringSettings) -> int:
    """Days served before the monitored period: until the monitor's first calibration map has half a window."""
    return policy.horizon_days + 1 + monitoring.calibration_window_days // 2


def weekly_errors(frame: pd.DataFrame) -> list[float]:
    """|estimated - realized| ROC-AUC of each week's pooled answers (a week never straddles the shift)."""
    errors = []
    answers: list[Answers] = frame.attrs["answers"]
    start = frame.attrs["start"]
    shift_day = int(frame.loc[frame["shifted"], "day"].min()) + start if frame["shifted"].any() else None
    for first in range(0, len(answers), 7):
        week = [a for a in answers[first:first + 7]
                if shift_day is None or (a.day >= shift_day) == (answers[first].day >= shift_day)]
        mapped = np.concatenate([a.mapped for a in week])
        probabilities = np.concatenate([a.probabilities for a in week])
        decided = np.concatenate([a.decided for a in week])
        outcomes = np.concatenate([a.outcomes for a in week])
        errors.append(abs(estimate(mapped, decided, draws=0).roc_auc
                          - evaluate(outcomes, probabilities, decided).roc_auc))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A smaller population and shorter periods.")
    parser.add_argument("--customers", type=int, help="Population size (default: 4,000; 2,500 with --quick).")
    parser.add_argument("--shift-share", type=float, default=1.0, help="Share of a day's scored customers moved.")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    if args.customers:
        size = replace(size, customers=args.customers)
    settings = load_settings()
    t, m = settings.training, settings.monitoring
    policy = LabelPolicy(horizon_days=t.horizon_days, decline_below=t.decline_below, growth_above=t.growth_above)
    days = size.train_days + warm_up_days(policy, m) + size.monitor_days + policy.horizon_days + 1
    log(f"simulating {size.customers:,} customers x {days} days")
    world = World.simulate(size.customers, days, args.seed)
    log(f"training the champion on the first {size.train_days} days")
    params = ModelParams(**{**t.model.model_dump(), "forest_trees": size.trees, "threads": 2})
    champion = train_champion(world, policy, size.train_days, t.grid_days, params)
    log(f"champion: test ROC-AUC {champion.test.roc_auc:.4f}, macro-F1 {champion.test.macro_f1:.4f} "
        f"({champion.rows})")
    log("the population's features on every served day")
    populations = dict(world.features_by_day(served_days(world, size, policy, m)))
    frames = {}
    for scenario in SCENARIOS:
        log(f"scenario {scenario}: {size.monitor_days} days of {size.daily:,} answers")
        frames[scenario] = run_scenario(world, champion, populations, scenario, size, args.shift_share, policy, m,
                                        args.seed)
    report(size, args, champion, frames, policy, m.estimate_alert_auc_drop)


def first_day(frame: pd.DataFrame, column: str) -> int | None:
    days = frame.loc[frame["shifted"] & frame[column], "day"]
    return None if days.empty else int(days.min())


def report(size: Size, args: argparse.Namespace, champion: Champion, frames: dict[str, pd.DataFrame],
           policy: LabelPolicy, margin: float) -> None:
    threshold = champion.test.roc_auc - margin
    horizon = policy.horizon_days
    print(f"# estimated vs realized quality ({machine()}; {size.customers:,} simulated customers, champion trained "
          f"on {size.train_days} days, {size.monitor_days} monitored days of {size.daily:,} answers, shift of "
          f"{args.shift_share:.0%} of them from day {size.shift_day})")
    print(f"champion test ROC-AUC {champion.test.roc_auc:.4f}; alert below {threshold:.4f} "
          f"(monitoring.estimate_alert_auc_drop {margin:g})")
    print("| scenario | period | estimated AUC | realized AUC | estimated macro-F1 | realized macro-F1 | "
          "drift share | weighted drift share | alert days |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for scenario, frame in frames.items():
        for shifted, part in frame.groupby("shifted"):
            print(f"| {scenario} | {'after' if shifted else 'before'} day {size.shift_day} | "
                  f"{part['estimated_auc'].mean():.4f} | {part['realized_auc'].mean():.4f} | "
                  f"{part['estimated_f1'].mean():.4f} | {part['realized_f1'].mean():.4f} | "
                  f"{part['drift_share'].mean():.2f} | {part['weighted_drift_share'].mean():.2f} | "
                  f"{int(part['alert'].sum())} |")
    errors = {scenario: weekly_errors(frame) for scenario, frame in frames.items()}
    daily_error = float(np.mean(np.concatenate([np.abs(f["estimated_auc"] - f["realized_auc"]).to_numpy()
                                                for f in frames.values()])))
    inside = [(f["band_low"] <= f["realized_auc"]) & (f["realized_auc"] <= f["band_high"]) for f in frames.values()]
    covered = float(np.mean(np.concatenate([part.to_numpy() for part in inside])))
    harmful = frames["harmful"].assign(realized_alert=lambda f: f["realized_auc"] < threshold)
    detected = first_day(harmful, "alert")
    realized = first_day(harmful, "realized_alert")
    false_alarms = int(frames["none"]["alert"].sum() + frames["harmless"]["alert"].sum()
                       + harmful.loc[~harmful["shifted"], "alert"].sum())
    worst = max(max(e) for e in errors.values())
    print("weekly |estimated - realized| ROC-AUC: " + "; ".join(
        f"{s} max {max(e):.4f} mean {np.mean(e):.4f}" for s, e in errors.items()) +
        f"; daily mean {daily_error:.4f}; realized inside the 95 % band on {covered:.0%} of days")
    days_estimated = None if detected is None else detected - size.shift_day + 1
    days_realized = None if realized is None else realized - size.shift_day + horizon + 1
    checks = {f"estimate within 0.03 ROC-AUC of realized ({worst:.4f})": worst <= 0.03,
              f"harmful shift detected within 1 day by the estimate ({days_estimated})":
                  days_estimated is not None and days_estimated <= 1,
              f"no false alarm ({false_alarms})": false_alarms == 0}
    for check, ok in checks.items():
        print(f"{'met   ' if ok else 'MISSED'} {check}")
    print_result({"estimated_auc_abs_error": round(worst, 4), "days_to_detect_estimated": days_estimated,
                  "days_to_detect_realized": days_realized, "false_alarms": false_alarms})


if __name__ == "__main__":
    main()
