"""Model quality on the simulator's held-out time window: every baseline, each single model, the ensemble, the oracle.

A simulated history is archived and its features rebuilt in Feast (the backfill's code); the
trainer's own training set, split and fitting run on it; everything is scored on the same test
window. The oracle knows each customer's true future rate (the generator's own model) and
turns it into class probabilities the way the labels are defined: the ceiling for any model.

    python -m bench.model_quality [--customers 10000] [--days 240] [--seed 42] [--samples PATH]

Figures go to stdout, ending with one JSON line: ``{"ensemble_auc", "ensemble_macro_f1", "oracle_auc",
"best_baseline_auc", "best_baseline_macro_f1", "best_single_auc", "best_single_macro_f1"}``.
Targets: the ensemble beats every baseline and each single model on macro-F1 and ROC-AUC and
reaches at least 0.9 of the oracle's ROC-AUC. ``--samples PATH`` also writes every model's,
baseline's and the oracle's ROC-AUC and macro-F1 as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from activity_settings import load_settings
from bench.common import log, machine, print_result
from bench.datasets import simulated_history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=240)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--samples", type=Path, help="Also write every model's ROC-AUC and macro-F1 here (JSON).")
    args = parser.parse_args()

    from model_contract.evaluate import comparison_table, evaluate, markdown_table
    from model_contract.onnx_runner import as_matrix
    from training.baselines import fit_baselines
    from training.oracle import OracleClassifier
    from training.pipeline import build_training_data, fit_models, policy_of

    with tempfile.TemporaryDirectory(prefix="activity-bench-quality-") as tmp:
        settings = load_settings(data_dir=Path(tmp), spark={"master": "local[2]"})
        log(f"simulating {args.customers:,} customers x {args.days} days and rebuilding their features")
        population, prepared = simulated_history(settings, args.customers, args.days, seed=args.seed)
        log(f"{prepared['events']:,.0f} events; building the training set")
        data = build_training_data(settings)
        train, validation, test = data.part("train"), data.part("validation"), data.part("test")
        log(f"train {len(train):,} / validation {len(validation):,} / test {len(test):,} rows; fitting")
        fitted = fit_models(settings, data)
        baselines = fit_baselines(train, validation, data.daily, policy_of(settings))
        oracle = OracleClassifier(population, policy_of(settings)).tuned(validation)
    y, x = test["label_index"].to_numpy(), as_matrix(test)
    results = {"ensemble": evaluate(y, fitted.ensemble.predict_proba(x), fitted.ensemble.predict(x))}
    singles = {name: evaluate(y, model.predict_proba(x), model.predict(x)) for name, model in fitted.singles.items()}
    classical = {name: evaluate(y, model.predict_proba(test), model.predict(test))
                 for name, model in baselines.fitted.items()}
    results |= singles | classical | {"oracle": evaluate(y, oracle.predict_proba(test), oracle.predict(test))}

    t = settings.training
    print(f"# model quality ({machine()}; {args.customers:,} simulated customers x {args.days} days, seed {args.seed})")
    print(f"horizon {t.horizon_days} d, as_of every {t.grid_days} d; test window {len(test):,} rows "
          f"({', '.join(f'{k} {v:.0%}' for k, v in zip(('decline', 'stable', 'growth'), _shares(y), strict=True))})")
    for name, reason in baselines.skipped.items():
        print(f"skipped baseline {name}: {reason}")
    print(markdown_table(comparison_table(results)))
    ensemble, oracle_auc = results["ensemble"], results["oracle"].roc_auc
    best_baseline_auc = max(m.roc_auc for m in classical.values())
    best_baseline_f1 = max(m.macro_f1 for m in classical.values())
    best_single_auc = max(m.roc_auc for m in singles.values())
    best_single_f1 = max(m.macro_f1 for m in singles.values())
    checks = {
        "beats every baseline on ROC-AUC": ensemble.roc_auc > best_baseline_auc,
        "beats every baseline on macro-F1": ensemble.macro_f1 > best_baseline_f1,
        "beats each single model on ROC-AUC": ensemble.roc_auc > best_single_auc,
        "beats each single model on macro-F1": ensemble.macro_f1 > best_single_f1,
        f"reaches 0.9 of the oracle's ROC-AUC ({ensemble.roc_auc / oracle_auc:.3f})":
            ensemble.roc_auc >= 0.9 * oracle_auc,
    }
    for check, ok in checks.items():
        print(f"{'met   ' if ok else 'MISSED'} {check}")
    if args.samples:
        kinds = {"ensemble": "ensemble", "oracle": "oracle"} | dict.fromkeys(singles, "single") \
            | dict.fromkeys(classical, "baseline")
        args.samples.write_text(json.dumps({
            "test_rows": len(test), "skipped_baselines": baselines.skipped,
            "models": {name: {"kind": kinds[name], "roc_auc": m.roc_auc, "macro_f1": m.macro_f1}
                       for name, m in results.items()},
        }))
    print_result({
        "ensemble_auc": round(ensemble.roc_auc, 4), "ensemble_macro_f1": round(ensemble.macro_f1, 4),
        "oracle_auc": round(oracle_auc, 4),
        "best_baseline_auc": round(best_baseline_auc, 4), "best_baseline_macro_f1": round(best_baseline_f1, 4),
        "best_single_auc": round(best_single_auc, 4), "best_single_macro_f1": round(best_single_f1, 4),
    })


def _shares(y):
    import numpy as np

    return np.bincount(y, minlength=3) / max(1, len(y))


if __name__ == "__main__":
    main()
