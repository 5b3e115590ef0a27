"""The promotion gate: guard metrics must hold and the candidate must beat the champion on the same test window.

Pure logic over metric dictionaries, so every rule is unit-tested; the trainer supplies the
candidate's, the baselines' and the current champion's figures, all computed on one test window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from activity_settings import TrainingSettings
from model_contract.artifacts import CHALLENGER, CHAMPION


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def alias(self) -> str:
        return CHAMPION if self.promote else CHALLENGER

    def summary(self) -> str:
        return ("promoted: " if self.promote else "not promoted: ") + "; ".join(self.reasons)


def decide(candidate: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]],
           champion: Mapping[str, float] | None, settings: TrainingSettings) -> Decision:
    """Promote only when every guard holds and the champion (if any) is beaten on ``promotion_metric``."""
    metric = settings.promotion_metric
    failures, passes = [], []
    auc = candidate.get("roc_auc", math.nan)
    if not auc >= settings.min_roc_auc:  # NaN fails too
        failures.append(f"roc_auc {auc:.4f} below the guard {settings.min_roc_auc}")
    ece = candidate.get("ece", math.nan)
    if not ece <= settings.max_calibration_error:
        failures.append(f"calibration error {ece:.4f} above the guard {settings.max_calibration_error}")
    value = candidate.get(metric, math.nan)
    for name, figures in baselines.items():
        other = figures.get(metric, math.nan)
        if math.isnan(other):
            continue
        if not value > other:
            failures.append(f"{metric} {value:.4f} does not beat baseline {name} ({other:.4f})")
    if champion is None:
        passes.append("no champion yet")
    else:
        current = champion.get(metric, math.nan)
        if not value > current:
            failures.append(f"{metric} {value:.4f} does not beat the champion's {current:.4f} on the same test window")
        else:
            passes.append(f"{metric} {value:.4f} beats the champion's {current:.4f} on the same test window")
    if failures:
        return Decision(False, failures)
    return Decision(True, [f"guards hold (roc_auc {auc:.4f}, ece {ece:.4f})", *passes])
