"""Scoring latency and throughput: the scorer against the ceiling and the naive composition, same run.

A simulated history is archived, its features rebuilt in Feast and a champion trained and
registered; then three servers run in turn, each alone in its own uvicorn process (one worker)
on loopback: the scorer (``activity serve run``'s app), a trivial FastAPI endpoint (the
ceiling) and the naive composition (Feast ``get_online_features`` + MLflow pyfunc ``predict``
in the handler). The load comes from a second process (``bench.load``) at fixed rates, open loop;
a rate passes when every request succeeds and p99 <= 20 ms.

    python -m bench.serve [--customers 5000] [--days 180] [--seconds 5] [--rates 100,200,...] [--samples PATH]
                          [--profiles embedded,cluster] [--engines inprocess,triton]

Ends with one JSON line: ``{"p50_ms", "p99_ms", "max_rps_at_p99_20ms", "ceiling_rps", "naive_rps",
"ratio_vs_ceiling", "ratio_vs_naive"}``; p50/p99 are the scorer's at the highest passing rate.
Targets: >= 0.5 of the ceiling's rate and >= 5x the naive composition's. With ``--profiles embedded,cluster``
the scorer is also measured on the cluster profile's stores (Redis online store, MLflow on PostgreSQL:
throwaway servers on loopback) and the JSON line carries those figures under ``"cluster"``.
With ``--engines inprocess,triton`` (the default) the scorer is measured a second time with its model in
Triton Inference Server (``serving.model_server: triton``, the embedded server on loopback), same stores
and load, and the JSON line adds ``"triton_max_rps_at_p99_20ms"``, ``"triton_p99_ms"`` and
``"triton_vs_inprocess"`` (Triton's max rate over the in-process scorer's).
``--samples PATH`` also writes each server's figures per offered rate (achieved req/s, p50, p99, errors) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TypedDict

import httpx

from activity_settings import Settings, load_settings, settings_environment
from bench.common import cluster_stores, log, machine, print_result, profiles_argument
from bench.datasets import simulated_history
from infra.services import free_port

P99_BUDGET_MS = 20.0
APPS = {
    "scorer": "serving.main:app_from_environment",
    "ceiling": "bench.serve_apps:ceiling",
    "naive": "bench.serve_apps:naive",
}
SCORER = {"embedded": "scorer", "cluster": "scorer (cluster)"}  # the scorer's name in the table, per profile
TRITON = "scorer (triton)"


class Window(TypedDict):
    """One load window's figures: the JSON line of ``bench.load``."""

    sent: int
    ok: int
    errors: int
    p50_ms: float
    p99_ms: float
    achieved_rps: float


class Trials(Window):
    """The median of a rate's windows by p99, with the most errors of any window and every window's p99."""

    p99_ms_trials: list[float]


class Sweep(TypedDict):
    """A server's sweep over the offered rates."""

    best: float  # the highest rate with p99 <= 20 ms (0.0: none)
    figures: Trials | None  # at that rate
    sustained: float  # the highest rate it keeps up with
    steps: list[dict[str, object]]  # each rate's figures



def start_server(name: str, settings: Settings, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVITY_")} | settings_environment(settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", APPS[name], "--factory", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr is not None else ""
            raise RuntimeError(f"{name} server exited: {stderr[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1.0)
            return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{name} server did not start within 120 s")


def load(url: str, rate: float, seconds: float, headers: dict[str, str], customers: int) -> Window:
    command = [sys.executable, "-m", "bench.load", url, "--rate", str(rate), "--seconds", str(seconds),
               "--customers", str(customers), *(f"--header={k}: {v}" for k, v in headers.items())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 20 + 60)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def load_trials(url: str, rate: float, seconds: float, headers: dict[str, str], customers: int,
                trials: int) -> Trials:
    """``trials`` windows at ``rate``; the median window by p99 (one pause in one window is not the server's rate)."""
    windows = sorted((load(url, rate, seconds, headers, customers) for _ in range(trials)),
                     key=lambda figures: figures["p99_ms"])
    return {**windows[len(windows) // 2], "errors": max(window["errors"] for window in windows),
            "p99_ms_trials": [window["p99_ms"] for window in windows]}


def sweep(name: str, settings: Settings, rates: list[float], seconds: float, headers: dict[str, str],
          customers: int, trials: int = 1) -> Sweep:
    """Rates in increasing order while the server keeps up; the highest rate with p99 <= 20 ms (and its
    figures), and the highest rate it sustains at all (every request answered, >= 95 % of the rate).
    Each rate is measured ``trials`` times and judged on the median window."""
    port = free_port()
    process = start_server(name, settings, port)
    url = f"http://127.0.0.1:{port}/v1/customers/{{customer}}/activity"
    best, sustained, over = 0.0, 0.0, False
    best_figures: Trials | None = None
    steps: list[dict[str, object]] = []
    try:
        load(url, min(rates[0], 25), 2.0, headers, customers)  # warm-up
        for rate in rates:
            figures = load_trials(url, rate, seconds, headers, customers, trials)
            steps.append({"rate": rate, **figures})
            passed = figures["errors"] == 0 and figures["p99_ms"] <= P99_BUDGET_MS
            keeps_up = figures["errors"] == 0 and figures["achieved_rps"] >= 0.95 * rate
            log(f"{name:>8} {rate:>7,.0f} req/s: p50 {figures['p50_ms']:8.2f} ms  p99 {figures['p99_ms']:8.2f} ms  "
                f"achieved {figures['achieved_rps']:7,.0f}/s  {'ok' if passed else 'over budget'}")
            over = over or not passed  # the budget counts up to the first rate that misses it
            if not over:
                best, best_figures = rate, figures
            if keeps_up:
                sustained = rate
            if not passed and not keeps_up:
                break
        return {"best": best, "figures": best_figures, "sustained": sustained, "steps": steps}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # still draining a backlog
            process.kill()
            process.wait(timeout=15)


def prepare(settings: Settings, customers: int, days: int) -> dict[str, str]:
    """A simulated history's features in Feast and a trained champion; the scorer's request headers."""
    from serving.auth import issue_token
    from training.pipeline import train

    log(f"simulating {customers:,} customers x {days} days, rebuilding features, training")
    simulated_history(settings, customers, days)
    outcome = train(settings)
    log(f"champion: version {outcome.version} ({outcome.decision.summary()})")
    return {"Authorization": f"Bearer {issue_token(settings, 'bench', ['scores:read'], 86_400)}"}


def bench_settings(data_dir: Path) -> Settings:
    base = load_settings(data_dir=data_dir, spark={"master": "local[2]"})
    return base.model_copy(update={
        "training": base.training.model_copy(update={"horizon_days": 30}),
        "serving": base.serving.model_copy(update={"prediction_log": False, "rate_limit_per_s": 1e6,
                                                   "rate_limit_burst": 1_000_000}),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", default="25,50,100,200,300,400,600,800,1000,1200,1500,1800,2200,2600,3000,3500,4000")
    parser.add_argument("--trials", type=int, default=3, help="Windows per rate; judged on the median by p99.")
    parser.add_argument("--profiles", default="embedded",
                        help="embedded, cluster or embedded,cluster: the scorer on the embedded stores (SQLite "
                             "online store, MLflow in SQLite) and/or the cluster profile's (Redis, MLflow on "
                             "PostgreSQL; throwaway servers on loopback), side by side")
    parser.add_argument("--engines", default="inprocess,triton",
                        help="inprocess, triton or both: where the scorer's model runs (serving.model_server)")
    parser.add_argument("--samples", type=Path, help="Also write each server's figures per offered rate here (JSON).")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    engines = [engine.strip() for engine in args.engines.split(",") if engine.strip()]
    if not engines or set(engines) - {"inprocess", "triton"}:
        parser.error(f"--engines: inprocess, triton or both, not {args.engines!r}")
    try:
        profiles = profiles_argument(args.profiles)
    except ValueError as exc:
        parser.error(str(exc))

    results: dict[str, Sweep] = {}
    with tempfile.TemporaryDirectory(prefix="activity-bench-serve-") as tmp, ExitStack() as servers:
        first: tuple[Settings, dict[str, str]] | None = None
        for profile in profiles:
            settings = bench_settings(Path(tmp) / profile)
            if profile == "cluster":
                settings = servers.enter_context(cluster_stores(settings, Path(tmp) / "servers", postgres=True))
            headers = prepare(settings, args.customers, args.days)
            first = first or (settings, headers)
            results[SCORER[profile]] = sweep("scorer", settings, rates, args.seconds, headers, args.customers,
                                             args.trials)
        assert first is not None
        if "triton" in engines:
            results[TRITON] = sweep_triton(first[0], rates, args.seconds, first[1], args.customers, args.trials)
        settings = first[0]  # the ceiling and the naive composition: measured once, on the first profile's stores
        naive_rates = [rate for rate in (2.0, 5.0, 10.0) if rate < rates[0]] + rates  # it starts far lower
        results["ceiling"] = sweep("ceiling", settings, rates, args.seconds, {}, args.customers, args.trials)
        results["naive"] = sweep("naive", settings, naive_rates, args.seconds, {}, args.customers, 1)

    ceiling = results["ceiling"]["best"]
    naive_best, naive = results["naive"]["best"], results["naive"]["sustained"]
    print(f"# scoring one customer per request ({machine()}; one uvicorn worker per server, load from a second "
          f"process on loopback, {args.seconds:.0f} s per rate, open loop)")
    print(f"{'server':>16} {'max req/s at p99 <= 20 ms':>26} {'p50 ms':>8} {'p99 ms':>8} {'max sustained req/s':>20}")
    for name, result in results.items():
        figures: Trials | dict[str, float] = result["figures"] or {}
        print(f"{name:>16} {result['best']:>26,.0f} {figures.get('p50_ms', float('nan')):>8.2f} "
              f"{figures.get('p99_ms', float('nan')):>8.2f} {result['sustained']:>20,.0f}")
    # the naive composition never meets p99 <= 20 ms when it cannot; it is then credited with the most it
    # sustains at any latency (generous to it), so the ratio stays finite and conservative
    naive_rps = naive_best if naive_best else naive
    if not naive_best:
        print(f"the naive composition met p99 <= 20 ms at no rate; it is credited with the {naive:,.0f} req/s "
              "it sustains at any latency")
    figures_by_profile = {}
    for profile in profiles:
        ours, ours_figures = results[SCORER[profile]]["best"], results[SCORER[profile]]["figures"]
        ratio_ceiling = ours / ceiling if ceiling else float("nan")
        ratio_naive = ours / naive_rps if naive_rps else float("nan")
        print(f"{SCORER[profile]} / ceiling: {ratio_ceiling:.2f} (target >= 0.5); "
              f"{SCORER[profile]} / naive: {ratio_naive:.1f}x (target >= 5)")
        figures_by_profile[profile] = {
            "p50_ms": round(ours_figures["p50_ms"], 2) if ours_figures else None,
            "p99_ms": round(ours_figures["p99_ms"], 2) if ours_figures else None,
            "max_rps_at_p99_20ms": ours, "ceiling_rps": ceiling, "naive_rps": naive_rps,
            "ratio_vs_ceiling": round(ratio_ceiling, 3), "ratio_vs_naive": round(ratio_naive, 2),
        }
    if args.samples:
        args.samples.write_text(json.dumps({
            "p99_budget_ms": P99_BUDGET_MS, "seconds_per_rate": args.seconds,
            "servers": {name: {"max_rps_at_p99_20ms": result["best"], "max_sustained_rps": result["sustained"],
                               "steps": result["steps"]} for name, result in results.items()},
        }))
    # the issue's keys for the first profile measured; the other profile's figures beside them
    head, *others = profiles
    print_result({**figures_by_profile[head], "profile": head, **triton_figures(results, SCORER[head]),
                  **{profile: figures_by_profile[profile] for profile in others}})


def sweep_triton(settings: Settings, rates: list[float], seconds: float, headers: dict[str, str], customers: int,
                 trials: int) -> Sweep:
    """The scorer with its model in the embedded Triton (started here on free ports, stopped after)."""
    from infra.triton import start_triton, stop_triton

    triton = settings.model_copy(update={"serving": settings.serving.model_copy(update={
        "model_server": "triton", "triton_port": free_port(), "triton_metrics_port": free_port()})})
    start_triton(triton, log)
    try:
        return sweep("scorer", triton, rates, seconds, headers, customers, trials)
    finally:
        stop_triton(triton.home)


def triton_figures(results: dict[str, Sweep], inprocess: str) -> dict[str, object]:
    """The Triton keys of the JSON line (none when Triton was not measured)."""
    if TRITON not in results:
        return {}
    best, figures = results[TRITON]["best"], results[TRITON]["figures"]
    ours = results[inprocess]["best"] if inprocess in results else 0
    return {"triton_max_rps_at_p99_20ms": best,
            "triton_p99_ms": round(figures["p99_ms"], 2) if figures else None,
            "triton_vs_inprocess": round(best / ours, 3) if ours else None}


if __name__ == "__main__":
    main()
