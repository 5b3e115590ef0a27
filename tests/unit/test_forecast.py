"""The activity forecast: features in, P(active) and expected transactions out; fitted on training rows only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.transform import FEATURE_NAMES
from model_contract import bg_nbd, pareto_nbd
from model_contract.forecast import ActivityForecast, ForecastError, summaries
from training.forecast import calibration_rows, fit_forecast

BG = {"r": 0.8, "alpha": 12.0, "a": 0.6, "b": 2.5}
PN = {"r": 0.55, "alpha": 10.6, "s": 0.61, "beta": 11.7}
HORIZON = 30


def features(count: np.ndarray, span: np.ndarray, tenure: np.ndarray) -> np.ndarray:
    x = np.zeros((len(count), len(FEATURE_NAMES)))
    for name, values in (("lifetime_tx_count", count), ("purchase_span_days", span), ("tenure_days", tenure)):
        x[:, FEATURE_NAMES.index(name)] = values
    return x


def test_summaries_read_repeat_transactions_recency_and_age() -> None:
    frequency, recency, age, seen = summaries(features(np.array([0.0, 1.0, 5.0]), np.array([0.0, 0.0, 40.0]),
                                                       np.array([0.0, 12.0, 90.0])))
    np.testing.assert_array_equal(seen, [False, True, True])
    np.testing.assert_array_equal(frequency, [0.0, 0.0, 4.0])
    np.testing.assert_array_equal(recency, [0.0, 0.0, 40.0])
    np.testing.assert_array_equal(age, [0.0, 12.0, 90.0])


@pytest.mark.parametrize(("model", "module", "params"), [("bg_nbd", bg_nbd, BG), ("pareto_nbd", pareto_nbd, PN)])
def test_predict_is_the_models_closed_forms(model: str, module: object, params: dict[str, float]) -> None:
    count, span, tenure = np.array([0.0, 1.0, 3.0, 400.0]), np.array([0.0, 0.0, 20.0, 300.0]), np.array(
        [0.0, 10.0, 60.0, 301.0])
    p_active, expected, usable = ActivityForecast(model, params, HORIZON).predict(features(count, span, tenure))
    np.testing.assert_array_equal(usable, [False, True, True, True])
    assert np.isnan(p_active[0]) and np.isnan(expected[0])  # never purchased: nothing to read
    x, t_x, age = count[1:] - 1, span[1:], tenure[1:]
    np.testing.assert_allclose(p_active[1:], module.p_active(params, x, t_x, age, HORIZON), rtol=1e-12)
    np.testing.assert_allclose(expected[1:], module.expected_purchases(params, x, t_x, age, HORIZON), rtol=1e-12)
    assert ((p_active[1:] > 0) & (p_active[1:] < 1)).all() and (expected[1:] > 0).all()
    assert expected[3] > 10 * expected[1]  # a daily shopper (no overflow) against a one-time buyer


def test_a_forecast_round_trips_through_its_file(tmp_path) -> None:
    forecast = ActivityForecast("pareto_nbd", PN, 90, {"test_roc_auc": 0.8})
    assert ActivityForecast.load(forecast.save(tmp_path / "f.json")) == forecast


@pytest.mark.parametrize(("data", "says"), [
    ({"model": "gamma_gamma", "params": BG, "horizon_days": 30}, "one of bg_nbd, pareto_nbd"),
    ({"model": "bg_nbd", "params": PN, "horizon_days": 30}, "needs parameters r, alpha, a, b"),
    ({"model": "bg_nbd", "params": BG | {"a": -1.0}, "horizon_days": 30}, "finite and positive"),
    ({"model": "bg_nbd", "params": BG, "horizon_days": 0}, "horizon_days"),
    ({"model": "bg_nbd", "params": BG}, "KeyError"),
    ([1, 2], "JSON object"),
])
def test_a_broken_forecast_file_says_what_is_wrong(tmp_path, data: object, says: str) -> None:
    path = tmp_path / "f.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ForecastError, match=says):
        ActivityForecast.load(path)


def simulated_rows(customers: int, seed: int) -> dict[str, pd.DataFrame]:
    """Customers drawn from BG/NBD, first purchases over 100 days, read at three as_of days like the trainer's
    rows: the features' three summaries and the transactions in the next ``HORIZON`` days."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(BG["r"], 1 / BG["alpha"], customers)
    dropout = rng.beta(BG["a"], BG["b"], customers)
    first = rng.uniform(0, 100, customers)
    times = []
    for i in range(customers):  # alive at the first purchase; a coin after each repeat purchase
        clock, bought = first[i], [first[i]]
        while (clock := clock + rng.exponential(1 / max(rate[i], 1e-12))) <= 500:
            bought.append(clock)
            if rng.random() < dropout[i]:
                break
        times.append(bought)
    parts = {}
    for name, as_of in (("train", 200), ("validation", 300), ("test", 400)):
        rows = []
        for i, t in enumerate(times):
            t = np.array(t)
            before = t[t < as_of]
            if len(before) == 0:
                continue
            start = np.floor(before.min())
            rows.append({"customer_id": f"c{i}", "as_of_day": as_of, "count": len(before),
                         "span": np.floor(before.max()) - start, "tenure": as_of - start,
                         "next": int(((t >= as_of) & (t < as_of + HORIZON)).sum())})
        frame = pd.DataFrame(rows)
        x = pd.DataFrame(features(frame["count"].to_numpy(float), frame["span"].to_numpy(float),
                                  frame["tenure"].to_numpy(float)), columns=list(FEATURE_NAMES))
        parts[name] = pd.concat([frame[["customer_id", "as_of_day", "next"]], x], axis=1)
    return parts


def test_the_trainer_keeps_a_forecast_that_ranks_and_counts() -> None:
    parts = simulated_rows(6_000, seed=3)
    forecast, figures = fit_forecast(parts["train"], parts["validation"], parts["test"], HORIZON)
    assert set(figures) == {"bg_nbd", "pareto_nbd"}
    chosen = figures[forecast.model]
    assert chosen["validation_log_loss"] == min(f["validation_log_loss"] for f in figures.values())
    assert forecast.figures["test_roc_auc"] == chosen["test_roc_auc"] > 0.75
    test = parts["test"]
    p_active, expected, usable = forecast.predict(test[list(FEATURE_NAMES)].to_numpy())
    active = test["next"].to_numpy() > 0
    assert roc_auc_score(active[usable], p_active[usable]) == pytest.approx(chosen["test_roc_auc"], abs=1e-9)
    assert expected[usable].sum() == pytest.approx(test["next"].sum(), rel=0.2)  # the population's count, roughly
    assert chosen["test_count_spearman"] > 0.3


def test_validation_and_test_outcomes_never_move_the_parameters() -> None:
    parts = simulated_rows(2_000, seed=4)
    fitted, _ = fit_forecast(parts["train"], parts["validation"], parts["test"], HORIZON)
    module = {"bg_nbd": bg_nbd, "pareto_nbd": pareto_nbd}[fitted.model]
    assert fitted.params == module.fit_params(calibration_rows(parts["train"]))  # the training rows alone
    scrambled = parts["test"].assign(next=np.random.default_rng(0).permutation(parts["test"]["next"].to_numpy()))
    again, _ = fit_forecast(parts["train"], parts["validation"], scrambled, HORIZON)
    assert (again.model, again.params) == (fitted.model, fitted.params)
    assert again.figures["test_roc_auc"] != fitted.figures["test_roc_auc"]  # the test outcomes reach the figures only
