"""The simulated world of ``bench.estimate``: a population's daily states, a champion trained on its past.

No Kafka, Spark or Feast: the simulator's events go through the tests' pandas twin of the
stream's daily partials into ``streaming.history.ActivityHistory`` (the stream's own state
store) and THE transform, so the features are the ones the platform would compute; the labels
are the trainer's (``model_contract.labels``), the model the trainer's ensemble (``training.model``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from features.transform import FEATURE_NAMES, SECONDS_PER_DAY, window_features
from model_contract.evaluate import Metrics, evaluate
from model_contract.labels import LabelPolicy, as_of_days, as_of_grid, label_activity_change
from streaming.history import ActivityHistory
from streaming.simulator import Population, make_population, simulate
from training.dataset import split_by_time
from training.model import ActivityEnsemble, ModelParams, fit_ensemble

EPOCH = date(1970, 1, 1)


@dataclass
class World:
    """A population, its events as daily partials, its daily counts (for labels) and its epoch day zero."""

    population: Population
    partials: pd.DataFrame
    daily: pd.DataFrame  # customer_id, day, count
    first_day: int

    @classmethod
    def simulate(cls, customers: int, days: int, seed: int) -> World:
        from tests.partials import partials_of

        population = make_population(customers, date(2026, 1, 1), days, seed=seed)
        partials = partials_of(pa.concat_tables(list(simulate(population))))
        daily = partials[["customer_id", "day", "count"]].copy()
        return cls(population, partials, daily, (population.start - EPOCH).days)

    def features_by_day(self, days: list[int], customers: dict[int, np.ndarray] | None = None
                        ) -> Iterator[tuple[int, pd.DataFrame]]:
        """``(day, features)`` at 00:00 UTC of each epoch day in ``days`` (ascending), from the events before it.

        Each frame has ``customer_id`` and ``FEATURE_NAMES``: every customer seen so far, or
        ``customers[day]`` (customer indices into the population) when given.
        """
        history = ActivityHistory(capacity=self.population.size)
        merged_until = self.first_day
        by_day = self.partials.groupby("day", sort=True)
        for day in sorted(days):
            for partial_day in range(merged_until, day):
                if partial_day in by_day.groups:
                    history.merge(by_day.get_group(partial_day))
            merged_until = max(merged_until, day)
            if customers is None:
                rows = np.arange(history.size)
            else:
                wanted = self.population.customer_ids[customers[day]]
                rows = np.array([history.index[c] for c in wanted if c in history.index], dtype=np.int64)
            states = history.states(rows)
            features = window_features(states, np.full(len(rows), float(day) * SECONDS_PER_DAY))
            frame = pd.DataFrame(features, columns=list(FEATURE_NAMES))
            frame.insert(0, "customer_id", np.asarray(history.customer_ids, dtype=object)[rows])
            yield day, frame

    def labels(self, days: np.ndarray, policy: LabelPolicy, through_day: int | None = None) -> pd.DataFrame:
        """The trainer's labels at ``days`` (epoch days) from the counts before ``through_day`` (all when None)."""
        daily = self.daily if through_day is None else self.daily[self.daily["day"] < through_day]
        labels = label_activity_change(daily, np.asarray(days, dtype=np.int64), policy)
        labels["as_of_day"] = as_of_days(labels)
        return labels


@dataclass(frozen=True)
class Champion:
    model: ActivityEnsemble
    test: Metrics
    importances: dict[str, float]  # the members' mean normalized importances
    reference: pd.DataFrame  # the population as of the first day after training (features)
    rows: dict[str, int]


def train_champion(world: World, policy: LabelPolicy, train_days: int, grid_days: int, params: ModelParams
                   ) -> Champion:
    """Fit the ensemble the way ``activity train run`` does, on the history before ``first_day + train_days``."""
    end = world.first_day + train_days
    grid = as_of_grid(world.first_day, end - 1, policy, grid_days)
    labels = world.labels(grid, policy, through_day=end)
    split = split_by_time(np.unique(labels["as_of_day"]), policy.horizon_days)
    features = pd.concat([frame.assign(as_of_day=day) for day, frame in world.features_by_day([*grid.tolist(), end])])
    reference = features[features["as_of_day"] == end].drop(columns="as_of_day").reset_index(drop=True)
    rows = labels.merge(features, on=["customer_id", "as_of_day"], how="inner", validate="one_to_one")
    parts = {name: rows[rows["as_of_day"].isin(getattr(split, name))] for name in ("train", "validation", "test")}
    x = {name: part[list(FEATURE_NAMES)].to_numpy(dtype=np.float32) for name, part in parts.items()}
    y = {name: part["label_index"].to_numpy() for name, part in parts.items()}
    fitted = fit_ensemble(x["train"], y["train"], x["validation"], y["validation"], params)
    model = fitted.ensemble
    test = evaluate(y["test"], model.predict_proba(x["test"]), model.predict(x["test"]))
    forest = model.forest.feature_importances_
    booster = np.asarray(model.booster.feature_importances_, dtype=np.float64)
    mean = (forest / forest.sum() + booster / booster.sum()) / 2
    return Champion(model, test, dict(zip(FEATURE_NAMES, mean.tolist(), strict=True)), reference,
                    {name: len(part) for name, part in parts.items()})
