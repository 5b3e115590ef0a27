"""The model card: a markdown page saying what was trained, on what, how well, and what not to use it for.

Built from plain values (names, dates, row counts, a table, a dict of floats) so it can be rendered in a
unit test, by the trainer before anything is logged, or later from a stored run, without MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from model_contract.evaluate import HEADLINE, LOWER_IS_BETTER, markdown_table
from model_contract.labels import CLASSES, LabelPolicy

SPLITS = ("train", "validation", "test")
PER_CLASS = ("share", "precision", "recall", "f1", "roc_auc", "pr_auc", "ece")
Window = tuple[date | str, date | str, int]  # first as-of day, last as-of day (inclusive), labelled rows


def intended_use(policy: LabelPolicy) -> str:
    return (f"Score each known customer at a given time with the probabilities that their transaction count "
            f"over the next {policy.horizon_days} days declines, holds or grows against the previous "
            f"{policy.horizon_days} days, so that retention and growth teams can rank customers (e.g. the top "
            f"decile by P(decline)) and size their outreach. It is a decision-support score for groups of "
            f"customers, not a basis for automated decisions about an individual customer.")


def default_limitations(policy: LabelPolicy) -> list[str]:
    """The caveats every version carries; callers append run-specific ones."""
    return [
        "Trained and evaluated on simulated transactions: the metrics say how well the model recovers the "
        "simulator's behaviour, not how it will do on real customers. Re-validate before any real use.",
        f"The label is a count rule, not customer intent: `log1p(next) - log1p(previous)` over {policy.horizon_days}"
        f"-day windows, so for low-activity customers a change of one or two transactions can cross a threshold; "
        f"spend does not enter the label; customers first seen on or after the as-of day are not labelled.",
        "Calibration (the stacker) and the decision weights were fitted on the validation window: the "
        "probabilities match validation's class frequencies and will drift when class shares shift. Check the "
        "test ECE above and the monitoring drift reports.",
        "The decision rule was tuned for macro-F1; a use with different costs for missed and false decliners "
        "should choose its own threshold on P(decline).",
        "The test window is a single, most recent period: it does not show seasonal or longer-term behaviour.",
    ]


def model_card(*, model_name: str, split: Mapping[str, Window], policy: LabelPolicy, feature_names: Sequence[str],
               table: pd.DataFrame, headline: Mapping[str, float], model_version: str = "unregistered",
               headline_name: str = "ensemble", details: Mapping[str, str] | None = None,
               limitations: Sequence[str] | None = None, forecast: Mapping[str, Any] | None = None) -> str:
    """Markdown for one model version.

    ``split`` maps train/validation/test to ``(first as-of, last as-of, rows)``; ``table`` is
    ``comparison_table`` over every model and baseline on the test window; ``headline`` is the
    chosen model's ``Metrics.as_dict()`` (called ``headline_name`` in the table). The version is
    usually unknown until the model is registered, hence the placeholder. ``details`` adds free
    key/value rows (run id, commit); ``limitations`` replaces ``default_limitations(policy)``;
    ``forecast`` (the activity forecast's ``model``, ``horizon_days`` and ``figures``) adds its section.
    """
    limitations = default_limitations(policy) if limitations is None else list(limitations)
    identity = {"model": model_name, "version": model_version, **(details or {})}
    sections = [
        f"# Model card: {model_name}, version {model_version}",
        _key_values(identity),
        "## Data", _windows(split),
        "## Label policy", _label_policy(policy),
        f"## Features ({len(feature_names)})", "\n".join(f"- `{name}`" for name in feature_names),
        "## Comparison on the test window", _comparison_note(), markdown_table(table),
        f"## Headline metrics: {headline_name}", _headline(headline), _per_class(headline),
        *(["## Activity forecast", _forecast(forecast)] if forecast else []),
        "## Intended use", intended_use(policy),
        "## Limitations", "\n".join(f"- {item}" for item in limitations),
    ]
    return "\n\n".join(sections) + "\n"


def _forecast(forecast: Mapping[str, Any]) -> str:
    figures: Mapping[str, Any] = forecast.get("figures") or {}
    rows = "\n".join(f"| {name.removeprefix('test_')} | {_number(value)} |" for name, value in figures.items()
                     if name.startswith("test_"))
    return (f"Served beside the class: P(any transaction in the next {forecast.get('horizon_days')} days) and the "
            f"expected transactions in them, from {forecast.get('model')} fitted on the training rows' features "
            f"(`lifetime_tx_count`, `purchase_span_days`, `tenure_days`). On the test window:\n\n"
            f"| figure | value |\n| --- | ---: |\n{rows}")


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


def _key_values(values: Mapping[str, object]) -> str:
    return "\n".join(f"- **{key}**: {value}" for key, value in values.items())


def _windows(split: Mapping[str, Window]) -> str:
    """Splits in train/validation/test order (others after), so the time order reads top to bottom."""
    names = [s for s in SPLITS if s in split] + [s for s in split if s not in SPLITS]
    table = pd.DataFrame([[str(first), str(last), str(int(rows))] for first, last, rows in (split[s] for s in names)],
                         columns=["first as-of", "last as-of", "rows"], index=pd.Index(names, name="split"))
    note = ("Splits are by as-of time with a horizon-long gap, so no label window overlaps a later split; "
            "members are fitted on train, calibration and the decision rule on validation, metrics on test.")
    return markdown_table(table) + "\n\n" + note


def _label_policy(policy: LabelPolicy) -> str:
    decline, growth = math.expm1(policy.decline_below), math.expm1(policy.growth_above)
    return _key_values({
        "horizon": f"{policy.horizon_days} days after vs {policy.horizon_days} days before the as-of time",
        "change": "`log1p(next count) - log1p(previous count)`",
        CLASSES[0]: f"change <= {policy.decline_below:g} (about {decline:+.0%} in count + 1)",
        CLASSES[2]: f"change >= {policy.growth_above:g} (about {growth:+.0%} in count + 1)",
        CLASSES[1]: "otherwise",
    })


def _comparison_note() -> str:
    lower = ", ".join(f"`{m}`" for m in HEADLINE if m in LOWER_IS_BETTER)
    return (f"Same rows for every entry. Lower is better for {lower}; higher for the rest. "
            "`decline_lift_top_decile` = decline rate among the 10% highest P(decline) over the overall decline "
            "rate (1 = no better than random). n/a = undefined on these rows (e.g. a class absent).")


def _headline(headline: Mapping[str, float]) -> str:
    names = (*HEADLINE, "classwise_ece", "accuracy")
    table = pd.DataFrame({"value": [headline.get(name, math.nan) for name in names]},
                         index=pd.Index(names, name="metric"), dtype=np.float64)
    rows = headline.get("rows", math.nan)
    return (f"{rows:.0f} test rows.\n\n" if math.isfinite(rows) else "") + markdown_table(table)


def _per_class(headline: Mapping[str, float]) -> str:
    """Per-class columns read back from the flat ``as_dict`` names (``precision_decline`` ...)."""
    table = pd.DataFrame({metric: [headline.get(f"{metric}_{c}", math.nan) for c in CLASSES] for metric in PER_CLASS},
                         index=pd.Index(list(CLASSES), name="class"), dtype=np.float64)
    return markdown_table(table)
