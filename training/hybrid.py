"""The hybrid: the ensemble's members and the classic models under one stacker, the stacker decides.

BG/NBD and Pareto/NBD (``training.baselines``) know what trees on windowed features struggle to
learn from a few purchases a year: how long silence means a customer is gone. The hybrid gives their
class probabilities to the ensemble's stacker as members beside the forest and the booster; the
stacker (a logistic regression on the members' log-probabilities, fitted on validation rows) weighs
them and the decision rule is tuned on validation for macro-F1, exactly as for the ensemble. The
classic models' parameters come from the history before the first validation ``as_of``, so neither
the stacker's rows nor the test window informed them (the leakage test covers it).

It needs each row's exact purchase history (customer and ``as_of``), so it scores entity frames
like the baselines do; the scorer does not serve it yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from model_contract.onnx_runner import as_matrix
from training.baselines import LABEL, BgNbdBaseline
from training.model import ActivityEnsemble, Stacker, decide, tune_decision_weights


@dataclass
class HybridModel:
    ensemble: ActivityEnsemble
    classics: tuple[BgNbdBaseline, ...]  # BG/NBD and Pareto/NBD, as fitted
    stacker: Stacker
    decision_weights: np.ndarray
    name: ClassVar[str] = "hybrid"

    @classmethod
    def fit(cls, ensemble: ActivityEnsemble, classics: tuple[BgNbdBaseline, ...], validation: pd.DataFrame
            ) -> HybridModel:
        """Stack on ``validation`` (entity rows with the feature columns and ``label_index``)."""
        if not classics:
            raise ValueError("the hybrid needs at least one fitted classic model (BG/NBD or Pareto/NBD)")
        y = validation[LABEL].to_numpy(dtype=np.int64)
        members = cls._members(ensemble, classics, validation)
        stacker = Stacker.fit(members, y)
        return cls(ensemble, classics, stacker, tune_decision_weights(stacker.predict_proba(members), y))

    @staticmethod
    def _members(ensemble: ActivityEnsemble, classics: tuple[BgNbdBaseline, ...], frame: pd.DataFrame
                 ) -> list[np.ndarray]:
        return [*ensemble.member_probabilities(as_matrix(frame)), *(model.predict_proba(frame) for model in classics)]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.stacker.predict_proba(self._members(self.ensemble, self.classics, frame))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return decide(self.predict_proba(frame), self.decision_weights)
