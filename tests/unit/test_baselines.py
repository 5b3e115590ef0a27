"""Baselines and the oracle on a small simulated population, with features from THE transform.

The data path mirrors the platform without Kafka, Spark or Feast: simulated events -> per-day
partials (as ``streaming.aggregate`` computes them) -> ``ActivityHistory`` -> ``window_features``
at each as_of (00:00 UTC, so only the days before it), and labels from the daily counts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.special import hyp2f1
from scipy.stats import poisson
from sklearn.metrics import roc_auc_score

from features.transform import FEATURE_NAMES, window_features
from model_contract.bg_nbd import expected_purchases as bgnbd_expected_purchases
from model_contract.bg_nbd import fit_params as fit_bgnbd_params
from model_contract.bg_nbd import p_active as bgnbd_p_active
from model_contract.labels import LabelPolicy, as_of_grid, label_activity_change
from streaming.history import ActivityHistory
from streaming.simulator import Population, make_population, simulate
from tests.partials import partials_of
from training.baselines import (
    CLASSIC_MODELS,
    STABLE,
    BgNbdBaseline,
    DailyHistory,
    PersistenceBaseline,
    RecencyFrequencyBaseline,
    fit_baselines,
)
from training.dataset import split_by_time
from training.oracle import EPOCH, OracleClassifier, as_of_days, expected_next, poisson_class_probabilities

DAY_S = 86_400
START = date(2026, 1, 1)
FIRST_DAY = (START - EPOCH).days
POLICY = LabelPolicy(horizon_days=30)


@dataclass(frozen=True)
class Simulated:
    population: Population
    daily: pd.DataFrame
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def simulated(customers: int, days: int, seed: int) -> Simulated:
    """Events -> daily partials, labels on a weekly as_of grid, features at each as_of, a time split."""
    population = make_population(customers, START, days, seed=seed)
    first_day = (START - EPOCH).days
    grid = as_of_grid(first_day, first_day + days - 1, POLICY, grid_days=7)
    partials = partials_of(pa.concat_tables(simulate(population)))
    history, snapshots, merged_until = ActivityHistory(capacity=customers), [], first_day
    for as_of in grid.tolist():  # the state at 00:00 UTC of as_of: every day before it
        history.merge(partials[(partials["day"] >= merged_until) & (partials["day"] < as_of)])
        merged_until = as_of
        features = window_features(history.states(np.arange(history.size)), np.full(history.size, as_of * DAY_S))
        snapshots.append(pd.DataFrame(features).assign(customer_id=history.customer_ids, as_of_day=as_of))
    daily = partials[["customer_id", "day", "count"]]
    labels = label_activity_change(daily, grid, POLICY)
    rows = labels.merge(pd.concat(snapshots, ignore_index=True), on=["customer_id", "as_of_day"], how="left",
                        validate="one_to_one")
    assert not rows[list(FEATURE_NAMES)].isna().any().any()
    split = split_by_time(grid, POLICY.horizon_days, shares=(0.3, 0.2))
    part = {name: rows[rows["as_of_day"].isin(days_of)].reset_index(drop=True)
            for name, days_of in (("train", split.train), ("validation", split.validation), ("test", split.test))}
    return Simulated(population, daily, part["train"], part["validation"], part["test"])


@pytest.fixture(scope="module")
def data() -> Simulated:
    return simulated(customers=1_500, days=300, seed=11)


def macro_auc(frame: pd.DataFrame, probabilities: np.ndarray) -> float:
    return float(roc_auc_score(frame["label_index"], probabilities, multi_class="ovr", average="macro"))


def test_simulated_split_has_every_class_in_every_part(data: Simulated) -> None:
    for part in (data.train, data.validation, data.test):
        assert len(part) > 3_000 and set(part["label_index"]) == {0, 1, 2}


def test_oracle_ranks_far_better_than_chance_and_its_probabilities_sum_to_one(data: Simulated) -> None:
    probabilities = OracleClassifier(data.population, POLICY).predict_proba(data.test)
    assert probabilities.shape == (len(data.test), 3) and (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert macro_auc(data.test, probabilities) > 0.8


def test_oracle_probabilities_are_calibrated(data: Simulated) -> None:
    """The true conditional distribution: predicted class shares match the observed ones."""
    probabilities = OracleClassifier(data.population, POLICY).predict_proba(data.test)
    observed = np.bincount(data.test["label_index"], minlength=3) / len(data.test)
    np.testing.assert_allclose(probabilities.mean(axis=0), observed, atol=0.02)
    realized, expected = data.test["next"].to_numpy(), expected_next(data.population, data.test, POLICY)
    assert abs(realized.sum() / expected.sum() - 1.0) < 0.02


def test_oracle_window_is_the_label_window() -> None:
    """Everyone stops after simulated day 20: the window starting on day 21 expects (and gets) nothing."""
    base = make_population(60, START, 30, seed=3)
    n = base.size
    population = replace(base, base_rate=base.base_rate * 20, change_start=np.full(n, 20.0),
                         change_days=np.full(n, 1e-9), change_factor=np.zeros(n))
    daily = partials_of(pa.concat_tables(simulate(population)))[["customer_id", "day", "count"]]
    policy = LabelPolicy(horizon_days=5)
    labels = label_activity_change(daily, FIRST_DAY + np.array([16, 20, 21]), policy)
    labels["expected"] = expected_next(population, labels, policy)
    day = as_of_days(labels) - FIRST_DAY
    rows = population.customer_ids.searchsorted(labels["customer_id"].to_numpy(dtype=str))
    after = labels[day == 21]
    assert (after["expected"] == 0).all() and (after["next"] == 0).all()
    last = labels[day == 20]  # only day 20 left in the window
    np.testing.assert_allclose(last["expected"], population.daily_rate(np.array([20]))[rows[day == 20], 0])
    assert last["next"].sum() > 0 and abs(last["next"].sum() / last["expected"].sum() - 1) < 0.2
    ending = labels[day == 16]  # days 16..20: the window's last day is as_of + horizon - 1
    np.testing.assert_allclose(ending["expected"], population.daily_rate(np.arange(16, 21))[rows[day == 16]].sum(1))


def test_poisson_class_probabilities_follow_the_label_thresholds() -> None:
    policy = LabelPolicy(horizon_days=30, decline_below=-0.3, growth_above=np.log(2.0))
    mean = np.array([0.0, 0.0, 0.4, 3.0, 3.0, 12.0, 60.0])
    previous = np.array([0.0, 5.0, 0.0, 3.0, 9.0, 12.0, 30.0])
    counts = np.arange(400)
    for mu, prev, row in zip(mean, previous, poisson_class_probabilities(mean, previous, policy), strict=True):
        label = policy.classify(np.log1p(counts) - np.log1p(prev))
        mass = poisson.pmf(counts, mu) if mu > 0 else (counts == 0).astype(float)
        np.testing.assert_allclose(row, [mass[label == k].sum() for k in range(3)], atol=1e-12)


def test_persistence_predicts_stable_with_the_training_prior(data: Simulated) -> None:
    baseline = PersistenceBaseline.fit(data.train)
    assert (baseline.predict(data.test) == STABLE).all()
    probabilities = baseline.predict_proba(data.test)
    observed = np.bincount(data.train["label_index"], minlength=3) / len(data.train)
    np.testing.assert_allclose(probabilities[0], observed, atol=1e-3)
    assert (probabilities == probabilities[0]).all() and macro_auc(data.test, probabilities) == 0.5


def test_recency_frequency_heuristic_beats_chance_but_not_the_oracle(data: Simulated) -> None:
    heuristic = macro_auc(data.test, RecencyFrequencyBaseline.fit(data.validation).predict_proba(data.test))
    oracle = macro_auc(data.test, OracleClassifier(data.population, POLICY).predict_proba(data.test))
    assert 0.62 < heuristic < oracle - 0.05


def test_daily_history_gives_point_in_time_rfm() -> None:
    d0 = 20_000
    daily = pd.DataFrame({"customer_id": ["a", "a", "a", "b"], "day": [d0, d0 + 3, d0 + 10, d0 + 5],
                          "count": [2, 1, 4, 1]})
    rfm = DailyHistory(daily).rfm(np.array(["a", "a", "a", "b", "b", "zz"]),
                                  np.array([d0, d0 + 10, d0 + 11, d0 + 5, d0 + 9, d0 + 9]))
    expected = pd.DataFrame({  # a before its first day, a (day d0+10 not yet), a (all), b not yet, b, unknown
        "frequency": [0, 1, 2, 0, 0, 0], "recency": [0, 3, 10, 0, 0, 0], "T": [0, 10, 11, 0, 4, 0],
        "active_days": [0, 2, 3, 0, 1, 0], "count": [0, 3, 7, 0, 1, 0]}, dtype=np.float64)
    pd.testing.assert_frame_equal(rfm, expected)


def test_bgnbd_expectation_equals_the_textbook_form() -> None:
    """The Euler-transformed hypergeometric gives eq. 10 where the textbook form is still stable."""
    params = {"r": 1.3, "alpha": 6.0, "a": 0.6, "b": 3.0}
    x, t_x, age = np.array([0.0, 1, 4, 12]), np.array([0.0, 5, 30, 80]), np.array([10.0, 40, 60, 90])
    r, alpha, a, b = params.values()
    z = 30 / (alpha + age + 30)
    numerator = (a + b + x - 1) / (a - 1) * (1 - ((alpha + age) / (alpha + age + 30)) ** (r + x)
                                               * hyp2f1(r + x, b + x, a + b + x - 1, z))
    alive = np.where(x > 0, 1 / (1 + a / (b + x - 1) * ((alpha + age) / (alpha + t_x)) ** (r + x)), 1.0)
    np.testing.assert_allclose(bgnbd_expected_purchases(params, x, t_x, age, 30.0), numerator * alive, rtol=1e-10)
    heavy = bgnbd_expected_purchases(params, np.array([150.0]), np.array([149.0]), np.array([150.0]), 30.0)
    assert np.isfinite(heavy).all() and 20 < heavy[0] < 40  # a daily shopper: about a purchase a day


def simulate_bgnbd(params: dict[str, float], customers: int, seed: int, future_t: float = 0.0
                   ) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers drawn from the BG/NBD story (Poisson purchases, a coin after each repeat purchase): their RFM
    at their age and whether they buy again in the ``future_t`` after it."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(params["r"], 1 / params["alpha"], customers)
    dropout = rng.beta(params["a"], params["b"], customers)
    age = rng.uniform(60, 200, customers)
    clock, frequency, recency = np.zeros(customers), np.zeros(customers), np.zeros(customers)
    bought_next = np.zeros(customers, dtype=bool)
    alive = np.ones(customers, dtype=bool)
    while alive.any():
        clock = np.where(alive, clock + rng.exponential(1 / np.maximum(rate, 1e-12)), clock)
        within = alive & (clock <= age)
        bought_next |= alive & (clock > age) & (clock <= age + future_t)
        frequency, recency = frequency + within, np.where(within, clock, recency)
        alive = within & (rng.random(customers) >= dropout)  # after the age, the first purchase settles it
    return pd.DataFrame({"frequency": frequency, "recency": recency, "T": age}), bought_next


def test_bgnbd_probability_of_activity_matches_the_bgnbd_story() -> None:
    """Customers drawn from BG/NBD itself: P(any purchase in the next t) is calibrated and ranks well."""
    truth = {"r": 0.8, "alpha": 12.0, "a": 0.6, "b": 2.5}
    rfm, bought = simulate_bgnbd(truth, customers=60_000, seed=5, future_t=30.0)
    p = bgnbd_p_active(truth, rfm["frequency"], rfm["recency"], rfm["T"], 30.0)
    assert ((p >= 0) & (p <= 1)).all()
    assert p.mean() == pytest.approx(bought.mean(), abs=0.01)
    for low, high in ((0.0, 0.2), (0.2, 0.5), (0.5, 1.0)):
        rows = (p >= low) & (p < high)
        assert rows.sum() > 1_000 and p[rows].mean() == pytest.approx(bought[rows].mean(), abs=0.02), (low, high)
    assert roc_auc_score(bought, p) > 0.75
    # the expected count's Poisson view over-states activity: it ignores the customers already gone
    naive = -np.expm1(-bgnbd_expected_purchases(truth, rfm["frequency"], rfm["recency"], rfm["T"], 30.0))
    assert abs(p.mean() - bought.mean()) < abs(naive.mean() - bought.mean())


def test_bgnbd_maximum_likelihood_recovers_the_parameters() -> None:
    truth = {"r": 1.2, "alpha": 8.0, "a": 0.7, "b": 3.5}
    fitted = fit_bgnbd_params(simulate_bgnbd(truth, customers=8_000, seed=1)[0])
    for name, value in truth.items():
        assert fitted[name] == pytest.approx(value, rel=0.3), name


def test_bgnbd_baseline_ranks_better_than_chance(data: Simulated) -> None:
    """The baseline's plumbing (RFM, scaling, Poisson classes) with the dependency-free estimator."""
    baseline = BgNbdBaseline.fit(data.daily, data.validation, POLICY, fit_params=fit_bgnbd_params)
    probabilities = baseline.predict_proba(data.test)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert macro_auc(data.test, probabilities) > 0.65


def as_active_target(frame: pd.DataFrame) -> pd.DataFrame:
    index = (frame["next"] > 0).astype(np.int64)
    return frame.assign(label_index=index, label=np.where(index == 1, "active", "inactive"))


def test_every_baseline_fits_the_active_target_with_two_classes(data: Simulated) -> None:
    policy = replace(POLICY, target="active")
    train, validation, test = (as_active_target(part) for part in (data.train, data.validation, data.test))
    baselines = fit_baselines(train, validation, data.daily, policy)
    assert not baselines.skipped
    for name, baseline in baselines.fitted.items():
        probabilities = baseline.predict_proba(test)
        assert probabilities.shape == (len(test), 2), name
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
        assert set(np.unique(baseline.predict(test))) <= {0, 1}
    persistence = baselines.fitted["persistence"].predict(test)
    assert (persistence == (test["previous"] > 0)).all()  # "nothing changes": active again if active before
    for name in ("recency_frequency", "bg_nbd", "pareto_nbd"):
        assert roc_auc_score(test["label_index"], baselines.fitted[name].predict_proba(test)[:, 1]) > 0.7, name
    oracle = OracleClassifier(data.population, policy).predict_proba(test)
    assert oracle.shape == (len(test), 2) and roc_auc_score(test["label_index"], oracle[:, 1]) > 0.8


@pytest.mark.parametrize("model", CLASSIC_MODELS, ids=lambda model: model.name)
def test_the_classic_models_see_nothing_after_what_they_may_know(data: Simulated, model: type[BgNbdBaseline]
                                                                ) -> None:
    """The leakage test: rewriting every event from the first validation day on changes neither the
    model's (BG/NBD's, Pareto/NBD's) parameters nor any row's probabilities at an as_of up to that day,
    for either target; rewriting the events from a test as_of on changes no test row of that as_of."""
    cutoff = int(as_of_days(data.validation).min())
    rng = np.random.default_rng(3)
    future = data.daily["day"] >= cutoff
    rewritten = data.daily.copy()
    rewritten.loc[future, "count"] = rng.integers(1, 20, int(future.sum()))  # another future altogether
    rewritten = rewritten[~future | (rng.random(len(rewritten)) < 0.5)]
    for target in ("change", "active"):
        policy = replace(POLICY, target=target)
        frame = data.validation if target == "change" else as_active_target(data.validation)
        honest, tampered = (model.fit(daily, frame, policy) for daily in (data.daily, rewritten))
        assert honest.params == tampered.params, target
        rows = frame[as_of_days(frame) == cutoff]
        np.testing.assert_array_equal(honest.predict_proba(rows), tampered.predict_proba(rows))
        last = int(as_of_days(data.test).max())
        late = data.daily["day"] >= last
        shifted = pd.concat([data.daily[~late], data.daily[late].assign(count=lambda f: f["count"] * 7)])
        at_last = data.test[as_of_days(data.test) == last]
        refit = model.fit(shifted, frame, policy)
        np.testing.assert_array_equal(honest.predict_proba(at_last), refit.predict_proba(at_last))


def test_the_hybrid_stacks_the_classic_models_with_the_members_for_either_target(data: Simulated) -> None:
    from model_contract.onnx_runner import as_matrix
    from training.hybrid import HybridModel
    from training.model import ModelParams, fit_ensemble

    params = ModelParams(forest_trees=30, booster_rounds=40, threads=1)
    for target in ("change", "active"):
        policy = replace(POLICY, target=target)
        train, validation, test = (part if target == "change" else as_active_target(part)
                                   for part in (data.train, data.validation, data.test))
        fitted = fit_ensemble(as_matrix(train), train["label_index"].to_numpy(), as_matrix(validation),
                              validation["label_index"].to_numpy(), params, classes=policy.classes)
        classics = tuple(model.fit(data.daily, validation, policy) for model in CLASSIC_MODELS)
        hybrid = HybridModel.fit(fitted.ensemble, classics, validation)
        probabilities = hybrid.predict_proba(test)
        assert probabilities.shape == (len(test), len(policy.classes))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
        assert hybrid.stacker.coef.shape == (len(policy.classes), 4 * len(policy.classes))  # four members
        assert set(np.unique(hybrid.predict(test))) <= set(range(len(policy.classes)))


def test_every_baseline_is_fitted_and_scores_the_test_rows(data: Simulated) -> None:
    baselines = fit_baselines(data.train, data.validation, data.daily, POLICY)
    assert set(baselines.fitted) == {"persistence", "recency_frequency", "bg_nbd", "pareto_nbd"}
    assert not baselines.skipped
    for baseline in baselines.fitted.values():
        assert baseline.predict_proba(data.test).shape == (len(data.test), 3)


def test_every_model_is_scored_once_and_decides_as_its_own_predict(data: Simulated) -> None:
    """``score_all`` computes each model's test probabilities once and decides from them: the
    decisions must be those of each model's own ``predict`` (persistence's rule is not its
    probabilities), for the ensemble, its members, the baselines and the hybrid."""
    from model_contract.evaluate import evaluate
    from model_contract.onnx_runner import as_matrix
    from training.hybrid import HybridModel
    from training.model import ModelParams, fit_ensemble
    from training.pipeline import evaluate_all, score_all

    y = data.train["label_index"].to_numpy()
    fitted = fit_ensemble(as_matrix(data.train), y, as_matrix(data.validation),
                          data.validation["label_index"].to_numpy(),
                          ModelParams(forest_trees=20, booster_rounds=20, threads=1))
    baselines = fit_baselines(data.train, data.validation, data.daily, POLICY).fitted
    classics = tuple(baselines[name] for name in ("bg_nbd", "pareto_nbd"))
    scored = {**baselines, "hybrid": HybridModel.fit(fitted.ensemble, classics, data.validation)}
    outputs = score_all(fitted, scored, data.test)
    assert set(outputs) == {"ensemble", *fitted.singles, *scored}
    x_test = as_matrix(data.test)
    for name, (probabilities, decided) in outputs.items():
        model = {"ensemble": fitted.ensemble, **fitted.singles}.get(name)
        own = model.predict(x_test) if model is not None else scored[name].predict(data.test)
        np.testing.assert_array_equal(decided, own, err_msg=name)
        assert probabilities.shape == (len(data.test), 3), name
    assert (outputs["persistence"][1] == STABLE).all()  # a rule apart from its (constant) probabilities
    results = evaluate_all(fitted, scored, data.test)
    hybrid = scored["hybrid"]
    direct = evaluate(data.test["label_index"].to_numpy(), hybrid.predict_proba(data.test), hybrid.predict(data.test))
    assert results["hybrid"] == direct
