"""Online quality on hand-made prediction logs and daily counts: the join, the figures, the tests, the alert."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY
from scipy.stats import mannwhitneyu
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, roc_auc_score

from model_contract.labels import CLASSES, LabelPolicy, as_of_days
from monitoring.predictions import COLUMNS
from monitoring.quality import (
    ALERT_NAME,
    export_gauges,
    f1_drop_alert,
    matured,
    metric_name,
    online_quality,
    per_prediction_log_loss,
    two_proportion_z_test,
)
from training.dataset import labelled_entities

POLICY = LabelPolicy(horizon_days=30, decline_below=-0.3, growth_above=0.3)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_DAY = 20_454  # 2026-01-01
LAST_DAY = FIRST_DAY + 99  # the archive's latest (partial) day
PROBABILITIES = [f"p_{name}" for name in CLASSES]


def day_start(day: int, hours: float = 0.0) -> datetime:
    return EPOCH + timedelta(days=day, hours=hours)


def record(customer: str, as_of: datetime, label: int = 1, version: str | None = "1", arm: str = "champion",
           shadow: bool = False, degraded: bool = False, logged: float = 0.0,
           probabilities: tuple[float, float, float] = (0.2, 0.6, 0.2)) -> dict:
    return {"request_id": "r", "customer_id": customer, "as_of": as_of, "label": label,
            **dict(zip(PROBABILITIES, probabilities, strict=True)), "model_name": "customer-activity",
            "model_version": version, "arm": arm, "degraded": degraded, "shadow": shadow,
            "logged_at": datetime(2026, 9, 1, tzinfo=UTC) + timedelta(seconds=logged)}


def log_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=COLUMNS)
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True)
    return frame


def steady_daily(customers: list[str], per_day: int = 1) -> pd.DataFrame:
    """Every customer active every day of the archive: stable by construction."""
    days = np.arange(FIRST_DAY, LAST_DAY + 1)
    return pd.DataFrame({"customer_id": np.repeat(customers, len(days)), "day": np.tile(days, len(customers)),
                         "count": per_day}).astype({"day": np.int64, "count": np.int64})


# ------------------------------------------------------------------------------------ the join


def test_a_prediction_matures_when_its_whole_outcome_window_precedes_the_latest_archived_day() -> None:
    daily = steady_daily(["a", "b", "c", "d"])
    boundary = LAST_DAY - 30  # outcome window boundary .. LAST_DAY - 1: complete days only
    log = log_frame([record("a", day_start(boundary)), record("b", day_start(boundary, hours=23.5)),
                     record("c", day_start(boundary + 1)), record("d", day_start(LAST_DAY))])
    joined = matured(log, daily, POLICY)
    assert sorted(joined["customer_id"]) == ["a", "b"]  # a mid-day as_of belongs to its calendar day
    assert joined.attrs["funnel"]["not_matured"] == 2 and joined.attrs["last_day"] == LAST_DAY
    assert (joined["previous"] == 30).all() and (joined["next"] == 30).all() and (joined["outcome"] == 1).all()


def test_the_outcome_is_the_training_label() -> None:
    rng = np.random.default_rng(3)
    customers = [f"c{i}" for i in range(40)]
    days = np.arange(FIRST_DAY, LAST_DAY + 1)
    rates = rng.uniform(0.05, 2.0, size=(len(customers), 1)) * np.linspace(rng.uniform(0.2, 2), 1, len(days))
    counts = rng.poisson(rates)
    rows = [(c, int(d), int(n)) for i, c in enumerate(customers) for d, n in zip(days, counts[i], strict=True) if n]
    daily = pd.DataFrame(rows, columns=["customer_id", "day", "count"])
    entities = labelled_entities(daily, POLICY, grid_days=7)
    entities["day"] = as_of_days(entities)
    entities = entities[entities["day"] + 30 <= LAST_DAY]  # training's grid also uses the latest day
    log = log_frame([record(row.customer_id, day_start(int(row.day), hours=9)) for row in entities.itertuples()])
    joined = matured(log, daily, POLICY)
    expected = entities.set_index(["customer_id", "day"])["label_index"]
    got = joined.set_index(["customer_id", "as_of_day"])["outcome"]
    assert len(joined) == len(entities) > 100
    assert (got.sort_index().to_numpy() == expected.sort_index().to_numpy()).all()
    assert set(joined["outcome"]) == {0, 1, 2}


def test_hand_counted_outcomes_and_customers_without_history() -> None:
    as_of = LAST_DAY - 40
    daily = pd.DataFrame([  # customer, day, count
        ("falls", as_of - 10, 10), ("falls", as_of + 3, 2),        # log1p(2) - log1p(10) = -1.30: decline
        ("grows", as_of - 50, 1), ("grows", as_of + 29, 5),         # 0 before (but seen), 5 after: growth
        ("holds", as_of - 1, 4), ("holds", as_of, 4),               # stable
        ("edge", as_of - 30, 3), ("edge", as_of + 30, 9),           # in the previous window, not in the next
        ("new", as_of, 7),                                          # first seen on the as_of day: no label
        ("other", LAST_DAY, 1),
    ], columns=["customer_id", "day", "count"])
    log = log_frame([record(c, day_start(as_of, hours=12)) for c in ("falls", "grows", "holds", "edge", "new")])
    joined = matured(log, daily, POLICY).set_index("customer_id")
    assert joined["outcome"].to_dict() == {"edge": 0, "falls": 0, "grows": 2, "holds": 1}
    assert joined.loc["edge", "previous"] == 3 and joined.loc["edge", "next"] == 0
    assert joined.attrs["funnel"]["no_history"] == 1


def test_only_the_latest_answer_per_customer_day_version_and_arm_is_scored() -> None:
    daily = steady_daily(["a", "b"])
    day = LAST_DAY - 45
    log = log_frame([
        record("a", day_start(day, 20), label=2, logged=5),
        record("a", day_start(day, 8), label=0, logged=1),  # logged earlier, read later: still replaced
        record("a", day_start(day + 1), label=1, logged=2),  # another day
        record("a", day_start(day), label=1, version="2", logged=3),  # another version
        record("b", day_start(day), label=1, arm="challenger", version="2", logged=4),
        record("b", day_start(day), label=0, arm="challenger", version="2", logged=4),  # same instant: read order
    ])
    joined = matured(log, daily, POLICY)
    assert joined.attrs["funnel"]["duplicates"] == 2
    kept = {(r.customer_id, r.as_of_day - day, r.model_version, r.arm): r.label for r in joined.itertuples()}
    assert kept == {("a", 0, "1", "champion"): 2, ("a", 1, "1", "champion"): 1, ("a", 0, "2", "champion"): 1,
                    ("b", 0, "2", "challenger"): 0}


def test_shadow_scores_and_fallback_answers_are_not_scored() -> None:
    daily = steady_daily(["a"])
    as_of = day_start(LAST_DAY - 60)
    log = log_frame([record("a", as_of), record("a", as_of, arm="challenger", version="2", shadow=True),
                     record("a", as_of, version=None, degraded=True),  # class prior / heuristic
                     record("a", as_of, arm="challenger", degraded=True),  # single-member fallback of v1
                     record("a", as_of, probabilities=(math.nan, 0.5, 0.5), arm="challenger")])
    joined = matured(log, daily, POLICY)
    assert len(joined) == 1 and joined.loc[0, "arm"] == "champion" and joined.loc[0, "model_version"] == "1"
    funnel = joined.attrs["funnel"]
    assert (funnel["shadow"], funnel["fallback"], funnel["incomplete"], funnel["matured"]) == (1, 2, 1, 1)


def test_no_predictions_or_no_archive_is_an_empty_report() -> None:
    empty_log = log_frame([])
    joined = matured(empty_log, steady_daily(["a"]), POLICY)
    report = online_quality(joined, 30)
    assert joined.empty and report.groups == () and report.arm_test is None and report.matured == 0
    assert "No prediction has matured yet" in report.markdown()
    no_archive = pd.DataFrame({"customer_id": pd.Series(dtype=object), "day": pd.Series(dtype=np.int64),
                               "count": pd.Series(dtype=np.int64)})
    joined = matured(log_frame([record("a", day_start(FIRST_DAY))]), no_archive, POLICY)
    assert joined.empty and joined.attrs["last_day"] is None and joined.attrs["funnel"]["not_matured"] == 1
    assert "No archived events" in online_quality(joined, 30).markdown()


# --------------------------------------------------------------------------------- the figures


def scored_frame(groups: dict[tuple[str, str], tuple[int, float]], seed: int = 0) -> pd.DataFrame:
    """A joined frame: per (version, arm) ``n`` rows whose probabilities favour the true class by ``skill``."""
    rng = np.random.default_rng(seed)
    parts = []
    for (version, arm), (n, skill) in groups.items():
        outcome = rng.choice(3, size=n, p=[0.25, 0.5, 0.25])
        raw = rng.dirichlet(np.ones(3), size=n) + skill * np.eye(3)[outcome]
        p = np.round(raw / raw.sum(axis=1, keepdims=True), 6)
        parts.append(pd.DataFrame({"customer_id": [f"{arm}-{i}" for i in range(n)], "as_of_day": LAST_DAY - 40,
                                   "model_version": version, "arm": arm, "outcome": outcome,
                                   "label": p.argmax(axis=1), **dict(zip(PROBABILITIES, p.T, strict=True))}))
    return pd.concat(parts, ignore_index=True)


def test_group_figures_equal_sklearn_on_the_same_rows() -> None:
    joined = scored_frame({("3", "champion"): (400, 0.6), ("4", "challenger"): (350, 0.9)})
    report = online_quality(joined, 30)
    assert [(g.version, g.arm, g.n) for g in report.groups] == [("3", "champion", 400), ("4", "challenger", 350)]
    for group in report.groups:
        rows = joined[(joined["model_version"] == group.version) & (joined["arm"] == group.arm)]
        y, predicted, p = rows["outcome"].to_numpy(), rows["label"].to_numpy(), rows[PROBABILITIES].to_numpy()
        precision, recall, f1, _ = precision_recall_fscore_support(y, predicted, labels=[0, 1, 2], zero_division=0)
        values = group.values()
        assert values["accuracy"] == pytest.approx(accuracy_score(y, predicted), abs=1e-12)
        assert values["macro_precision"] == pytest.approx(precision.mean(), abs=1e-12)
        assert values["macro_recall"] == pytest.approx(recall.mean(), abs=1e-12)
        assert values["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"), abs=1e-12)
        for k, name in enumerate(CLASSES):
            assert values[f"f1_{name}"] == pytest.approx(f1[k], abs=1e-12)
            assert values[f"roc_auc_{name}"] == pytest.approx(roc_auc_score(y == k, p[:, k]), abs=1e-12)
        assert values["roc_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", labels=[0, 1, 2]), abs=1e-12)
    markdown = report.markdown()
    assert "| 3 | champion | 400 |" in markdown and "two-proportion z" in markdown


def test_a_class_that_never_occurs_leaves_its_figures_and_the_macro_auc_undefined() -> None:
    joined = scored_frame({("1", "champion"): (100, 2.0)})
    joined = joined[joined["outcome"] != 0]  # no decline happened; with skill 2 none is predicted either
    assert (joined["label"] != 0).all()
    values = online_quality(joined, 30).groups[0].values()
    assert math.isnan(values["f1_decline"]) and math.isnan(values["roc_auc_decline"])
    assert math.isnan(values["roc_auc"]) and math.isnan(values["macro_f1"])
    y, p = joined["outcome"].to_numpy(), joined[PROBABILITIES].to_numpy()
    assert values["roc_auc_growth"] == pytest.approx(roc_auc_score(y == 2, p[:, 2]), abs=1e-12)


def test_groups_below_the_minimum_are_reported_not_scored() -> None:
    joined = scored_frame({("1", "champion"): (60, 0.5), ("2", "challenger"): (29, 0.5)})
    report = online_quality(joined, 30)
    small = report.group("2", "challenger")
    assert small is not None and small.n == 29 and not small.scored and small.values() == {}
    assert report.group("1", "champion").scored and report.arm_test is None
    table = report.table()
    assert table.loc[table["arm"] == "challenger", "macro_f1"].isna().all()
    assert "too few (< 30)" in report.markdown()


def test_two_proportion_z_test_against_hand_computation() -> None:
    # 60/100 right against 75/100: pooled 0.675, se = sqrt(0.675 * 0.325 * (1/100 + 1/100)) = 0.0662382
    z, p = two_proportion_z_test(60, 100, 75, 100)
    assert z == pytest.approx(0.15 / math.sqrt(0.675 * 0.325 * 0.02), rel=1e-12)
    assert z == pytest.approx(2.264554, abs=1e-6)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    assert p == pytest.approx(0.0235401, abs=1e-7)
    assert two_proportion_z_test(75, 100, 60, 100) == pytest.approx((-z, p))
    assert two_proportion_z_test(10, 10, 20, 20) == (0.0, 1.0)


def test_the_arm_test_compares_each_arms_largest_version() -> None:
    joined = scored_frame({("1", "champion"): (300, 0.5), ("2", "champion"): (40, 0.5),
                           ("2", "challenger"): (280, 1.5), ("1", "challenger"): (10, 0.5)}, seed=5)
    report = online_quality(joined, 30)
    test = report.arm_test
    assert test is not None and (test.champion_version, test.challenger_version) == ("1", "2")
    champion = joined[(joined["model_version"] == "1") & (joined["arm"] == "champion")]
    challenger = joined[(joined["model_version"] == "2") & (joined["arm"] == "challenger")]
    right = [int((rows["label"] == rows["outcome"]).sum()) for rows in (champion, challenger)]
    assert (test.z, test.p_value) == pytest.approx(two_proportion_z_test(right[0], 300, right[1], 280))
    assert test.accuracy_challenger == pytest.approx(right[1] / 280) and test.z > 0
    losses = [-np.log(np.clip(rows[PROBABILITIES].to_numpy()[np.arange(len(rows)), rows["outcome"]], 1e-15, 1))
              for rows in (champion, challenger)]
    u, p = mannwhitneyu(losses[1], losses[0], alternative="two-sided")
    assert (test.mann_whitney_u, test.mann_whitney_p_value) == pytest.approx((u, p))
    assert test.log_loss_champion == pytest.approx(losses[0].mean())
    np.testing.assert_allclose(per_prediction_log_loss(champion["outcome"].to_numpy(),
                                                       champion[PROBABILITIES].to_numpy()), losses[0])
    statsmodels = pytest.importorskip("statsmodels.stats.proportion")
    assert (test.z, test.p_value) == pytest.approx(statsmodels.proportions_ztest(right[::-1], [280, 300]))


# ----------------------------------------------------------------------- alert, gauges, names


def test_the_alert_fires_only_when_the_champion_drops_more_than_allowed() -> None:
    report = online_quality(scored_frame({("3", "champion"): (300, 0.6), ("3", "challenger"): (300, 0.6),
                                          ("2", "champion"): (20, 0.6)}), 30)
    online = report.group("3", "champion").metrics.macro_f1
    fired = f1_drop_alert(report, "3", online + 0.15, 0.1)
    assert fired is not None and fired.name == ALERT_NAME and fired.labels == {"model_version": "3", "arm": "champion"}
    assert "0.150 below" in fired.summary
    assert f1_drop_alert(report, "3", online + 0.1, 0.1) is None  # exactly the allowed drop
    assert f1_drop_alert(report, "3", online + 0.05, 0.1) is None
    assert f1_drop_alert(report, "3", online - 0.2, 0.0) is None  # better online than on test
    assert f1_drop_alert(report, "2", 0.99, 0.1) is None  # too few matured predictions to judge
    assert f1_drop_alert(report, "7", 0.99, 0.1) is None  # the champion has no matured answer
    assert f1_drop_alert(report, None, None, 0.1) is None  # no champion registered
    assert f1_drop_alert(report, "3", math.nan, 0.1) is None


def test_gauges_hold_the_last_run_only() -> None:
    def sample(version: str, arm: str, metric: str) -> float | None:
        return REGISTRY.get_sample_value("activity_monitor_online_quality",
                                         {"version": version, "arm": arm, "metric": metric})

    first = online_quality(scored_frame({("8", "champion"): (100, 0.5), ("9", "challenger"): (100, 0.5)}), 30)
    export_gauges(first)
    assert sample("8", "champion", "macro_f1") == pytest.approx(first.groups[0].metrics.macro_f1)
    assert sample("9", "challenger", "precision") == pytest.approx(first.groups[1].values()["macro_precision"])
    assert REGISTRY.get_sample_value("activity_monitor_online_quality_arm_p_value") == pytest.approx(
        first.arm_test.p_value)
    second = online_quality(scored_frame({("9", "champion"): (100, 0.5), ("10", "challenger"): (10, 0.5)}), 30)
    export_gauges(second)
    assert sample("8", "champion", "macro_f1") is None and sample("10", "challenger", "macro_f1") is None
    assert REGISTRY.get_sample_value("activity_monitor_online_quality_samples",
                                     {"version": "10", "arm": "challenger"}) == 10
    assert math.isnan(REGISTRY.get_sample_value("activity_monitor_online_quality_arm_p_value"))


def test_mlflow_metric_names() -> None:
    assert metric_name("3", "champion", "macro_f1") == "v3_champion_macro_f1"
    assert metric_name("a-b", "challenger", "n") == "va_b_challenger_n"


def test_the_cli_reads_since_as_a_duration_or_a_time() -> None:
    from activity.commands.common import UserError
    from activity.commands.monitor import _since

    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    assert _since(None, now) is None
    assert _since("30d", now) == now - timedelta(days=30) and _since("1.5h", now) == now - timedelta(hours=1.5)
    assert _since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert _since("2026-11-01T02:00:00+02:00", now) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(UserError, match="--since must be like"):
        _since("yesterday", now)
