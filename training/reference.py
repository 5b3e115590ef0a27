"""The training reference for drift checks: a sample of features and their statistics.

Logged with every model; the drift job compares the features of scored customers against it.
The sample is the population as the model meets it when it is deployed: the features of the
training data's customers as of its last day, through the same Feast retrieval. (The training rows
themselves span months of as_of dates, early ones with windows not yet full, so they differ
from any single day's population by construction, and a drift check against them would always fire.)
The statistics logged beside it are ``model_contract.reference``'s, which the drift job reads.
"""

from __future__ import annotations

import pandas as pd


def reference_entities(daily: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Up to ``rows`` customers of the daily counts, each as of 00:00 UTC of the last day counted.

    ``daily`` has ``customer_id, day`` (epoch days); the last day may be incomplete, so the
    snapshot stands at its start, like an as_of of the training grid.
    """
    customers = pd.Series(pd.unique(daily["customer_id"]), dtype=object)
    if len(customers) > rows:
        customers = customers.sample(rows, random_state=seed)
    as_of = pd.Timestamp(int(daily["day"].max()) * 86_400, unit="s", tz="UTC").as_unit("ns")
    return pd.DataFrame({"customer_id": customers.sort_values().to_numpy(), "event_timestamp": as_of})
