"""`activity backtest` on every data set at hand, at several horizons: the model against the classic models.

The data sets:

- ``cdnow``: the CDNOW panel (23,570 customers' CD purchases, 1997-01 to 1998-06, 69,659 rows), the
  classic data set of the buy-till-you-die literature, as it ships inside the ``lifetimes`` wheel on
  PyPI (the ``datasets`` extra; only its data file is read, the package is never imported);
- ``simulator``: the platform's own simulator (``--customers`` x ``--days``), written as a CSV first.

    python -m bench.backtest [--datasets cdnow,simulator] [--targets change,active] [--horizons 30,90,182]
                             [--customers 5000] [--days 1000]

Each run prints the table of every model and baseline and its JSON line (the keys of `activity
backtest`); the benchmark ends with one JSON line ``{"runs": [...], "model_wins": n, "runs_total": n,
"not_evaluated": [...]}``, where a win (``model_beats_all``) is the model (the hybrid: the classic
models stacked with the ensemble's members, ``training.hybrid``) ahead of every baseline on both ROC-AUC and macro-F1.
A horizon a history is too short for (train, validation and test a horizon apart need about four
horizons of history: 182 days on CDNOW's 546) is listed in ``not_evaluated`` with the trainer's reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa

from activity_settings import load_settings
from bench.common import log, machine, print_result

DATASETS = ("cdnow", "simulator")


def cdnow_file() -> Path:
    """CDNOW_master.txt inside the installed ``lifetimes`` distribution (found without importing it)."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the CDNOW data set comes with the `lifetimes` wheel: ./run install (it is in the lock)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_master.txt"
    if not path.is_file():
        raise SystemExit(f"{path}: missing from the installed lifetimes package")
    return path


def simulator_file(directory: Path, customers: int, days: int, seed: int) -> Path:
    from datetime import date

    from streaming.simulator import make_population, simulate

    events = pa.concat_tables(simulate(make_population(customers, date(2025, 1, 1), days, seed=seed))).to_pandas()
    path = directory / "simulator.csv"
    pd.DataFrame({"customer_id": events["customer_id"], "event_time": events["event_time"],
                  "amount": events["amount"]}).to_csv(path, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--horizons", default="30,90,182")
    parser.add_argument("--targets", default="change,active")
    parser.add_argument("--customers", type=int, default=5_000, help="simulator: customers")
    parser.add_argument("--days", type=int, default=1000,
                        help="simulator: days (enough for a 182-day horizon)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from model_contract.evaluate import markdown_table
    from model_contract.labels import TARGETS
    from streaming.publish import ColumnMapping
    from training.backtest import BacktestSource, backtest, json_figure
    from training.data import NoTrainingData

    names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"--datasets: unknown {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    horizons = [int(h) for h in args.horizons.split(",")]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if set(targets) - set(TARGETS):
        raise SystemExit(f"--targets: unknown {', '.join(sorted(set(targets) - set(TARGETS)))}; known: "
                         f"{', '.join(TARGETS)}")
    log(f"machine: {machine()}")
    runs: list[dict[str, object]] = []
    skipped: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="activity-bench-backtest-") as tmp:
        root = Path(tmp)
        settings = load_settings(data_dir=root / "data", spark={"master": "local[2]"})
        sources = {}
        for name in names:
            if name == "cdnow":
                sources[name] = BacktestSource(cdnow_file(), ColumnMapping("customer_id", "date", "dollar_value"))
            else:
                log(f"simulating {args.customers:,} customers x {args.days} days")
                sources[name] = BacktestSource(simulator_file(root, args.customers, args.days, args.seed),
                                               ColumnMapping("customer_id", "event_time", "amount"))
        for name, source in sources.items():
            for target, horizon in itertools.product(targets, horizons):
                log(f"{name}: {target} over {horizon} days")
                try:
                    report = backtest(settings, source, target=target, horizon_days=horizon,
                                      work_dir=root / f"{name}-{target}-{horizon}")
                except NoTrainingData as exc:  # e.g. 182 days on 18 months: too few as_of dates for three splits
                    log(f"{name}: {target} over {horizon} days not evaluated: {exc}")
                    skipped.append({"dataset": name, "target": target, "horizon_days": horizon, "reason": str(exc)})
                    continue
                table = pd.DataFrame(report.metrics).T[["roc_auc", "macro_f1", "pr_auc", "log_loss", "ece"]]
                table.index.name = "model"
                print(f"\n{name}, {target} over {horizon} days, test {report.windows['test']}, "
                      f"{report.rows['test']:,} rows\n")
                print(markdown_table(table))
                forecast = report.forecast
                summary = {"dataset": name, **report.summary(), "model": report.model,
                           "model_beats_all": report.model_beats_all(), "forecast_model": forecast.get("model"),
                           "forecast_auc": json_figure(forecast.get("test_roc_auc", math.nan)),
                           "forecast_count_mae": json_figure(forecast.get("test_count_mae", math.nan))}
                print(json.dumps(summary), flush=True)
                runs.append(summary)
    print_result({"runs": runs, "model_wins": sum(bool(run["model_beats_all"]) for run in runs),
                  "runs_total": len(runs), "not_evaluated": skipped})


if __name__ == "__main__":
    main()
