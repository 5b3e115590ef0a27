"""Scoring latency and throughput: the scorer against the ceiling and the naive composition, same run.

A simulated history is archived, its features rebuilt in Feast and a champion trained and
registered; then three servers run in turn, each alone in its own uvicorn process (one worker)
on loopback: the scorer (``activity serve run``'s app), a trivial FastAPI endpoint (the
ceiling) and the naive composition (Feast ``get_online_features`` + MLflow pyfunc ``predict``
in the handler). The load comes from a second process (``bench.load``) at fixed rates, open loop;
a rate passes when every request succeeds and p99 <= 20 ms.

    python -m bench.serve [--customers 5000] [--days 120] [--seconds 5] [--rates 100,200,...]

Ends with one JSON line: ``{"p50_ms", "p99_ms", "max_rps_at_p99_20ms", "ceiling_rps", "naive_rps",
"ratio_vs_ceiling", "ratio_vs_naive"}``; p50/p99 are the scorer's at the highest passing rate.
Targets: >= 0.5 of the ceiling's rate and >= 5x the naive composition's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from activity_settings import Settings, load_settings, settings_environment
from bench.common import machine, print_result
from bench.datasets import simulated_history

P99_BUDGET_MS = 20.0
APPS = {
    "scorer": "serving.main:app_from_environment",
    "ceiling": "bench.serve_apps:ceiling",
    "naive": "bench.serve_apps:naive",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(name: str, settings: Settings, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVITY_")} | settings_environment(settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", APPS[name], "--factory", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} server exited: {process.stderr.read()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1.0)
            return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{name} server did not start within 120 s")


def load(url: str, rate: float, seconds: float, headers: dict[str, str], customers: int) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.load", url, "--rate", str(rate), "--seconds", str(seconds),
               "--customers", str(customers), *(f"--header={k}: {v}" for k, v in headers.items())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 20 + 60)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def sweep(name: str, settings: Settings, rates: list[float], seconds: float, headers: dict[str, str],
          customers: int) -> tuple[float, dict[str, float] | None, list[tuple[float, dict[str, float]]]]:
    """Rates in increasing order until one fails; the highest passing rate and its figures."""
    port = free_port()
    process = start_server(name, settings, port)
    url = f"http://127.0.0.1:{port}/v1/customers/{{customer}}/activity"
    try:
        load(url, min(rates[0], 50), 2.0, headers, customers)  # warm-up
        best, best_figures, rows = 0.0, None, []
        for rate in rates:
            figures = load(url, rate, seconds, headers, customers)
            rows.append((rate, figures))
            passed = figures["errors"] == 0 and figures["p99_ms"] <= P99_BUDGET_MS
            log(f"{name:>8} {rate:>7,.0f} req/s: p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:8.2f} ms  "
                f"errors {figures['errors']}  {'ok' if passed else 'over budget'}")
            if not passed:
                break
            best, best_figures = rate, figures
        return best, best_figures, rows
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", default="25,50,100,200,300,400,600,800,1000,1200,1500,1800,2200,2600,3000,3500,4000")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]

    from serving.auth import issue_token
    from training.pipeline import train

    with tempfile.TemporaryDirectory(prefix="activity-bench-serve-") as tmp:
        base = load_settings(data_dir=Path(tmp), spark={"master": "local[2]"})
        settings = base.model_copy(update={
            "training": base.training.model_copy(update={"horizon_days": 30}),
            "serving": base.serving.model_copy(update={"prediction_log": False, "rate_limit_per_s": 1e6,
                                                       "rate_limit_burst": 1_000_000}),
        })
        log(f"simulating {args.customers:,} customers x {args.days} days, rebuilding features, training")
        simulated_history(settings, args.customers, args.days)
        outcome = train(settings)
        log(f"champion: version {outcome.version} ({outcome.decision.summary()})")
        headers = {"Authorization": f"Bearer {issue_token(settings, 'bench', ['scores:read'], 86_400)}"}
        results = {name: sweep(name, settings, rates, args.seconds, headers if name == "scorer" else {},
                               args.customers) for name in ("scorer", "ceiling", "naive")}

    ours, ours_figures, _ = results["scorer"]
    ceiling, naive = results["ceiling"][0], results["naive"][0]
    print(f"# scoring one customer per request ({machine()}; one uvicorn worker per server, load from a second "
          f"process on loopback, {args.seconds:.0f} s per rate, open loop)")
    print(f"{'server':>8} {'max req/s at p99 <= 20 ms':>26} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (best, figures, _) in results.items():
        p50 = figures["p50_ms"] if figures else float("nan")
        p99 = figures["p99_ms"] if figures else float("nan")
        print(f"{name:>8} {best:>26,.0f} {p50:>8.2f} {p99:>8.2f}")
    ratio_ceiling = ours / ceiling if ceiling else float("nan")
    ratio_naive = ours / naive if naive else float("inf")
    print(f"scorer / ceiling: {ratio_ceiling:.2f} (target >= 0.5); scorer / naive: {ratio_naive:.1f}x (target >= 5)")
    print_result({
        "p50_ms": round(ours_figures["p50_ms"], 2) if ours_figures else None,
        "p99_ms": round(ours_figures["p99_ms"], 2) if ours_figures else None,
        "max_rps_at_p99_20ms": ours, "ceiling_rps": ceiling, "naive_rps": naive,
        "ratio_vs_ceiling": round(ratio_ceiling, 3), "ratio_vs_naive": round(ratio_naive, 2),
    })


if __name__ == "__main__":
    main()
