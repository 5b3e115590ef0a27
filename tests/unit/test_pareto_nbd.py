"""Pareto/NBD's closed forms against numerical integration and against customers drawn from the model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from sklearn.metrics import roc_auc_score

from model_contract import pareto_nbd

PARAMETER_SETS = (  # alpha > beta, alpha < beta, and far apart
    {"r": 0.55, "alpha": 10.6, "s": 0.61, "beta": 11.7},
    {"r": 1.5, "alpha": 30.0, "s": 2.0, "beta": 5.0},
    {"r": 0.8, "alpha": 3.0, "s": 0.8, "beta": 40.0},
)


@pytest.mark.parametrize("params", PARAMETER_SETS)
def test_a0_equals_the_integral_it_stands_for(params: dict[str, float]) -> None:
    r, alpha, s, beta = params.values()
    for x, start, end in ((0, 0, 30), (2, 20, 60), (40, 300, 365), (5, 50, 50.5)):
        integral = quad(lambda tau, x=x: (alpha + tau) ** -(r + x) * (beta + tau) ** -(s + 1), start, end,
                        epsabs=0, epsrel=1e-12, limit=200)[0]
        got = pareto_nbd.log_a0(params, np.array([x]), np.array([start]), np.array([end]))[0]
        assert got == pytest.approx(np.log((r + s + x) * integral), rel=1e-9), (x, start, end)


def test_a0_stays_finite_for_daily_shoppers() -> None:
    """Where the integral underflows a double (x = 300) its log does not, and nothing is NaN."""
    params = PARAMETER_SETS[2]
    x = np.array([300.0, 300.0, 0.0])
    got = pareto_nbd.log_a0(params, x, np.array([360.0, 365.0, 0.0]), np.array([365.0, 365.0, 0.0]))
    assert np.isfinite(got[0]) and got[1] == -np.inf and got[2] == -np.inf
    alive = pareto_nbd.p_alive(params, x, np.array([360.0, 365.0, 0.0]), np.array([365.0, 365.0, 0.0]))
    assert np.isfinite(alive).all() and alive[1] == pytest.approx(1.0) and alive[2] == pytest.approx(1.0)


def simulate(params: dict[str, float], customers: int, seed: int, future_t: float = 0.0
             ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Customers drawn from the Pareto/NBD story: their RFM at their age, and their purchases in the next
    ``future_t`` (whether any, and how many)."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(params["r"], 1 / params["alpha"], customers)
    death = rng.exponential(1 / rng.gamma(params["s"], 1 / params["beta"], customers))
    age = rng.uniform(60, 200, customers)
    clock, frequency, recency, later = (np.zeros(customers) for _ in range(4))
    buying = np.ones(customers, dtype=bool)
    while buying.any():
        clock = np.where(buying, clock + rng.exponential(1 / np.maximum(rate, 1e-12)), clock)
        buying &= clock <= np.minimum(death, age + future_t)
        within = buying & (clock <= age)
        frequency, recency = frequency + within, np.where(within, clock, recency)
        later += buying & (clock > age)
    return pd.DataFrame({"frequency": frequency, "recency": recency, "T": age}), later > 0, later


def test_probability_of_activity_and_expected_count_match_the_story() -> None:
    truth = {"r": 0.8, "alpha": 12.0, "s": 0.7, "beta": 25.0}
    rfm, bought, count = simulate(truth, customers=60_000, seed=3, future_t=30.0)
    args = (rfm["frequency"], rfm["recency"], rfm["T"])
    p = pareto_nbd.p_active(truth, *args, 30.0)
    assert ((p >= 0) & (p <= 1)).all()
    assert p.mean() == pytest.approx(bought.mean(), abs=0.01)
    for low, high in ((0.0, 0.2), (0.2, 0.5), (0.5, 1.0)):
        rows = (p >= low) & (p < high)
        assert rows.sum() > 1_000 and p[rows].mean() == pytest.approx(bought[rows].mean(), abs=0.02), (low, high)
    assert roc_auc_score(bought, p) > 0.75
    expected = pareto_nbd.expected_purchases(truth, *args, 30.0)
    assert expected.mean() == pytest.approx(count.mean(), rel=0.05)
    heavy = expected > np.quantile(expected, 0.9)
    assert expected[heavy].mean() == pytest.approx(count[heavy].mean(), rel=0.08)


def test_maximum_likelihood_recovers_the_parameters() -> None:
    truth = {"r": 1.2, "alpha": 8.0, "s": 0.9, "beta": 30.0}
    fitted = pareto_nbd.fit_params(simulate(truth, customers=10_000, seed=1)[0])
    for name, value in truth.items():
        assert fitted[name] == pytest.approx(value, rel=0.35), name
