"""Which drift counts: features that grow with time apart, the rest weighted by what the model uses.

Some features drift by construction: ``tenure_days`` grows by one every day for every customer,
and a customer's lifetime count, spend and purchase span only ever grow, so a population compared with
its own past always "drifts" in them, whatever happens. Those
(``monitoring.time_driven_features``) are reported apart and never counted in the drifted share.
The share is computed over the features the model uses (a non-zero importance) twice: as a
plain share of features, and weighted by the champion's importances (the mean of its members'
normalized importances), so a moved feature the model ignores weighs little and a moved feature
it leans on weighs much.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

TIME_DRIVEN = ("tenure_days", "lifetime_tx_count", "purchase_span_days", "lifetime_spend")


@dataclass(frozen=True)
class DriftShares:
    unweighted: float  # share of the counted features that drifted
    weighted: float  # importance-weighted share (NaN without importances)
    counted: tuple[str, ...]  # the features the shares are over
    drifted: tuple[str, ...]  # counted features that drifted
    time_driven: dict[str, bool]  # time-driven feature -> drifted, reported apart


def drift_shares(drifted: Mapping[str, bool], importances: Mapping[str, float] | None,
                 time_driven: Collection[str] = TIME_DRIVEN) -> DriftShares:
    """The drift shares of one comparison (``drifted``: feature -> drifted) under the rules above.

    Without importances (a model registered before they were logged) every feature counts and
    the weighted share is NaN.
    """
    apart = {name: bool(value) for name, value in drifted.items() if name in time_driven}
    used = [name for name in drifted if name not in time_driven
            and (importances is None or importances.get(name, 0.0) > 0.0)]
    moved = tuple(name for name in used if drifted[name])
    unweighted = len(moved) / len(used) if used else 0.0
    if importances is None:
        weighted = math.nan
    else:
        total = sum(importances[name] for name in used)
        weighted = sum(importances[name] for name in moved) / total if total > 0 else 0.0
    return DriftShares(unweighted, weighted, tuple(used), moved, apart)

