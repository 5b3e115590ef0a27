"""Pareto/NBD (Schmittlein, Morrison & Colombo 1987): purchases at a Poisson rate until an exponential death.

The purchase rate is Gamma(r, alpha) and the death rate Gamma(s, beta) across customers. Unlike
BG/NBD, a customer can die at any time, not only right after a purchase. From a customer's
``frequency`` x (repeat purchases), ``recency`` t_x (last - first purchase) and age ``T`` (now -
first purchase), everything follows from one integral, the chance of a death between ``a`` and
``b`` given the purchases up to ``a`` (Fader, Hardie & Lee 2005, "A Note on Deriving the Pareto/NBD
Model and Related Expressions", eq. 19)::

    A0(a, b) = (r + s + x) * integral_a^b (alpha + tau)^-(r + x) (beta + tau)^-(s + 1) dtau

written with Gauss' hypergeometric function, here through Euler's transformation into
``2F1(1, .; r + s + x + 1; z)``: its parameters no longer grow with x, so daily shoppers (x in the
hundreds) stay finite where the textbook form overflows. Everything is computed in logs.

No maintained library is a light dependency (``lifetimes`` is unmaintained since 2020, pymc-marketing
brings a compiler toolchain), so the maximum likelihood is scipy's, as for BG/NBD; the unit tests
check the closed forms against numerical integration and against customers drawn from the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, gammaln, hyp2f1

PARAMS = ("r", "alpha", "s", "beta")


def _unpack(params: dict[str, float]) -> tuple[float, float, float, float]:
    r, alpha, s, beta = (float(params[name]) for name in PARAMS)
    return r, alpha, s, beta


def log_a0(params: dict[str, float], frequency: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``log A0(start, end)`` (see the module's docstring); ``-inf`` where ``end == start``."""
    r, alpha, s, beta = _unpack(params)
    x, lo, hi = (np.asarray(v, dtype=np.float64) for v in (frequency, start, end))
    rsx = r + s + x
    second: float | np.ndarray
    if alpha >= beta:
        larger, second = alpha, s + 1.0  # 2F1(rsx, s + 1; rsx + 1; (alpha - beta) / (alpha + tau))
    else:
        larger, second = beta, r + x  # 2F1(rsx, r + x; rsx + 1; (beta - alpha) / (beta + tau))
    spread = abs(alpha - beta)

    def log_term(tau: np.ndarray) -> np.ndarray:  # log[2F1(rsx, second; rsx + 1; z) / (larger + tau)^rsx]
        z = spread / (larger + tau)
        # Euler: 2F1(a, b; c; z) = (1 - z)^(c - a - b) 2F1(c - a, c - b; c; z), with c - a = 1 here
        log_hyp = (1.0 - second) * np.log1p(-z) + np.log(hyp2f1(1.0, rsx + 1.0 - second, rsx + 1.0, z))
        return log_hyp - rsx * np.log(larger + tau)

    first, last = log_term(lo), log_term(hi)  # the term falls with tau: first >= last
    with np.errstate(divide="ignore"):
        return first + np.log(-np.expm1(np.minimum(last - first, 0.0)))


def log_likelihood(params: dict[str, float], frequency: np.ndarray, recency: np.ndarray, t_age: np.ndarray
                   ) -> np.ndarray:
    """Each customer's log-likelihood (eq. 19 of the note)."""
    r, alpha, s, beta = _unpack(params)
    x, age = (np.asarray(v, dtype=np.float64) for v in (frequency, t_age))
    alive = -(r + x) * np.log(alpha + age) - s * np.log(beta + age)
    died = np.log(s) - np.log(r + s + x) + log_a0(params, x, recency, age)
    return gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta) + np.logaddexp(alive, died)


def p_alive(params: dict[str, float], frequency: np.ndarray, recency: np.ndarray, t_age: np.ndarray) -> np.ndarray:
    """P(alive at ``T`` | x, t_x, T) (eq. 18 of the note)."""
    r, alpha, s, beta = _unpack(params)
    x, age = (np.asarray(v, dtype=np.float64) for v in (frequency, t_age))
    log_odds_dead = (np.log(s) - np.log(r + s + x) + (r + x) * np.log(alpha + age) + s * np.log(beta + age)
                     + log_a0(params, x, recency, age))
    return expit(-log_odds_dead)


def expected_purchases(params: dict[str, float], frequency: np.ndarray, recency: np.ndarray, t_age: np.ndarray,
                       future_t: float, alive: np.ndarray | None = None) -> np.ndarray:
    """Expected purchases in the next ``future_t`` (eq. 22 of the note): P(alive) x E[purchases | alive]."""
    r, alpha, s, beta = _unpack(params)
    x, age = (np.asarray(v, dtype=np.float64) for v in (frequency, t_age))
    shrink = np.log(beta + age) - np.log(beta + age + future_t)  # < 0
    # the expected lifetime within the next future_t, beta+T scaled: (1 - ((b+T)/(b+T+t))^(s-1)) / (s-1)
    lifetime = -shrink if abs(s - 1.0) < 1e-9 else -np.expm1((s - 1.0) * shrink) / (s - 1.0)
    given_alive = (r + x) / (alpha + age) * (beta + age) * lifetime
    return (p_alive(params, x, recency, age) if alive is None else alive) * given_alive


def p_active(params: dict[str, float], frequency: np.ndarray, recency: np.ndarray, t_age: np.ndarray,
             future_t: float, alive: np.ndarray | None = None) -> np.ndarray:
    """P(at least one purchase in the next ``future_t``).

    Alive at ``T``, the rates' posteriors are Gamma(r + x, alpha + T) and Gamma(s, beta + T); no purchase
    in the next t means living through it without buying, or dying at some tau < t before a purchase:
    the same integral as the likelihood's, from T to T + t.
    """
    r, alpha, s, beta = _unpack(params)
    x, age = (np.asarray(v, dtype=np.float64) for v in (frequency, t_age))
    later = age + future_t
    survives = -(r + x) * np.log(alpha + later) - s * np.log(beta + later)
    dies = np.log(s) - np.log(r + s + x) + log_a0(params, x, age, later)
    log_none = (r + x) * np.log(alpha + age) + s * np.log(beta + age) + np.logaddexp(survives, dies)
    return (p_alive(params, x, recency, age) if alive is None else alive) * -np.expm1(np.minimum(log_none, 0.0))


def fit_params(rfm: pd.DataFrame) -> dict[str, float]:
    """Maximum-likelihood ``r, alpha, s, beta`` (scipy's L-BFGS-B on the log parameters)."""
    x, t_x, age = (rfm[name].to_numpy(dtype=np.float64) for name in ("frequency", "recency", "T"))

    def negative_log_likelihood(log_params: np.ndarray) -> float:
        params = dict(zip(PARAMS, np.exp(np.clip(log_params, -20.0, 20.0)).tolist(), strict=True))
        with np.errstate(invalid="ignore", over="ignore"):  # a step too far makes it NaN: refused just below
            value = -float(np.sum(log_likelihood(params, x, t_x, age)))
        return value if np.isfinite(value) else 1e300

    result = minimize(negative_log_likelihood, np.zeros(4), method="L-BFGS-B")
    if not result.success:
        raise RuntimeError(f"Pareto/NBD maximum likelihood did not converge: {result.message}")
    return dict(zip(PARAMS, np.exp(result.x).tolist(), strict=True))
