"""The activity model: a RandomForest and an XGBoost classifier combined by a stacker fitted on validation.

The members are fitted on the training split with balanced class weights (so the minority
classes are learned); the stacker is a multinomial logistic regression on the members'
log-probabilities, fitted on the validation split without weights, so it both combines and
calibrates: its probabilities are estimates of the true class frequencies. The decision rule
(``argmax(p * decision_weights)``) is tuned on validation for macro-F1. Every piece is plain
arrays, so the ONNX export (``training.onnx_export``) rebuilds exactly the same computation.
The classes are the target's (``model_contract.labels.TARGET_CLASSES``): three for ``change``
(what the scorer serves), two for ``active``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.utils.class_weight import compute_sample_weight
from xgboost import XGBClassifier

from features.transform import FEATURE_NAMES
from model_contract.labels import CLASSES

N_CLASSES = len(CLASSES)
PROBABILITY_FLOOR = 1e-6  # members' probabilities are clipped here before the log


@dataclass(frozen=True)
class ModelParams:
    forest_trees: int = 200
    forest_max_depth: int | None = 14
    forest_min_samples_leaf: int = 10
    forest_max_features: float = 0.5
    booster_rounds: int = 300
    booster_max_depth: int = 6
    booster_learning_rate: float = 0.08
    booster_subsample: float = 0.8
    seed: int = 7
    threads: int = -1


@dataclass
class Stacker:
    """Multinomial logistic regression on log-probabilities: ``softmax(log(P) @ coef.T + intercept)``."""

    coef: np.ndarray  # (classes, classes * members)
    intercept: np.ndarray  # (classes,)

    @staticmethod
    def inputs(member_probabilities: Sequence[np.ndarray]) -> np.ndarray:
        stacked = np.hstack([np.asarray(p, dtype=np.float64) for p in member_probabilities])
        return np.log(np.clip(stacked, PROBABILITY_FLOOR, 1.0))

    @classmethod
    def fit(cls, member_probabilities: Sequence[np.ndarray], y: np.ndarray, c: float = 1.0) -> Stacker:
        inputs = cls.inputs(member_probabilities)
        model = LogisticRegression(C=c, max_iter=2_000).fit(inputs, y)
        coef, intercept = softmax_form(model, np.asarray(member_probabilities[0]).shape[1])
        return cls(coef=coef, intercept=intercept)

    def predict_proba(self, member_probabilities: Sequence[np.ndarray]) -> np.ndarray:
        logits = self.inputs(member_probabilities) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def softmax_form(model: LogisticRegression, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted logistic regression as ``softmax(x @ coef.T + intercept)`` over all ``n_classes``.

    A class absent from the fitting rows gets an intercept of -1e9 (never predicted); a binary fit
    (one logit ``z``) becomes the logits ``(0, z)``, whose softmax is the sigmoid.
    """
    coef = np.zeros((n_classes, model.coef_.shape[1]))
    intercept = np.full(n_classes, -1e9)
    if len(model.classes_) == 2 and model.coef_.shape[0] == 1:
        coef[model.classes_[1]], intercept[model.classes_[0]], intercept[model.classes_[1]] = (
            model.coef_[0], 0.0, model.intercept_[0])
    else:
        coef[model.classes_] = model.coef_
        intercept[model.classes_] = model.intercept_
    return coef, intercept


def tune_decision_weights(probabilities: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-class multipliers for ``argmax(p * w)`` that maximise macro-F1 on the given (validation) rows.

    Class 1's weight stays 1 (only ratios matter): three classes search the other two on a grid,
    two classes search class 0's weight alone, which is a threshold on ``p``.
    """
    n_classes = probabilities.shape[1]
    if n_classes == 2:
        candidates = [np.array([w, 1.0]) for w in np.exp(np.linspace(np.log(0.25), np.log(4.0), 41))]
    else:
        grid = np.exp(np.linspace(np.log(0.5), np.log(4.0), 13))
        candidates = [np.array([w0, 1.0, w2]) for w0, w2 in product(grid, grid)]
    best, best_score = np.ones(n_classes), -1.0
    for weights in candidates:
        score = f1_score(y, np.argmax(probabilities * weights, axis=1), average="macro", labels=range(n_classes))
        if score > best_score + 1e-12:
            best, best_score = weights, score
    return best


def decide(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.argmax(probabilities * weights, axis=1)


@dataclass
class ActivityEnsemble:
    """RandomForest + XGBoost members, a stacker over both, and a tuned decision rule."""

    forest: RandomForestClassifier
    booster: XGBClassifier
    stacker: Stacker
    decision_weights: np.ndarray
    feature_names: tuple[str, ...] = FEATURE_NAMES
    classes: tuple[str, ...] = CLASSES
    params: ModelParams = field(default_factory=ModelParams)

    def member_probabilities(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        n_classes = len(self.classes)
        return [_full_proba(self.forest, x, n_classes), _full_proba(self.booster, x, n_classes)]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.stacker.predict_proba(self.member_probabilities(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return decide(self.predict_proba(x), self.decision_weights)


@dataclass
class SingleModel:
    """One member alone, calibrated and tuned on validation the same way as the ensemble (a baseline)."""

    name: str
    member: RandomForestClassifier | XGBClassifier
    stacker: Stacker
    decision_weights: np.ndarray
    classes: tuple[str, ...] = CLASSES

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        member = _full_proba(self.member, np.asarray(x, dtype=np.float32), len(self.classes))
        return self.stacker.predict_proba([member])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return decide(self.predict_proba(x), self.decision_weights)


@dataclass
class FittedModels:
    ensemble: ActivityEnsemble
    singles: dict[str, SingleModel]


def fit_members(x: np.ndarray, y: np.ndarray, params: ModelParams, n_classes: int = N_CLASSES
                ) -> tuple[RandomForestClassifier, XGBClassifier]:
    """Both members on the training split, with balanced sample weights against class imbalance."""
    x = np.asarray(x, dtype=np.float32)
    weights = compute_sample_weight("balanced", y)
    forest = RandomForestClassifier(
        n_estimators=params.forest_trees, max_depth=params.forest_max_depth,
        min_samples_leaf=params.forest_min_samples_leaf, max_features=params.forest_max_features,
        n_jobs=params.threads, random_state=params.seed,
    )
    forest.fit(x, y, sample_weight=weights)
    booster = XGBClassifier(
        n_estimators=params.booster_rounds, max_depth=params.booster_max_depth,
        learning_rate=params.booster_learning_rate, subsample=params.booster_subsample,
        tree_method="hist", objective="multi:softprob" if n_classes > 2 else "binary:logistic",
        n_jobs=params.threads, random_state=params.seed,
    )
    booster.fit(x, y, sample_weight=weights)
    return forest, booster


def combine(forest: RandomForestClassifier, booster: XGBClassifier, x_validation: np.ndarray,
            y_validation: np.ndarray, params: ModelParams, classes: tuple[str, ...] = CLASSES) -> FittedModels:
    """Stack, calibrate and tune the decision rule on validation; the singles get the same treatment."""
    x_validation = np.asarray(x_validation, dtype=np.float32)
    members = {"random_forest": forest, "xgboost": booster}
    probabilities = {name: _full_proba(model, x_validation, len(classes)) for name, model in members.items()}
    singles = {}
    for name, model in members.items():
        stacker = Stacker.fit([probabilities[name]], y_validation)
        weights = tune_decision_weights(stacker.predict_proba([probabilities[name]]), y_validation)
        singles[name] = SingleModel(name, model, stacker, weights, classes)
    stacker = Stacker.fit(list(probabilities.values()), y_validation)
    weights = tune_decision_weights(stacker.predict_proba(list(probabilities.values())), y_validation)
    ensemble = ActivityEnsemble(forest=forest, booster=booster, stacker=stacker, decision_weights=weights,
                                classes=classes, params=params)
    return FittedModels(ensemble=ensemble, singles=singles)


def fit_ensemble(x_train: np.ndarray, y_train: np.ndarray, x_validation: np.ndarray, y_validation: np.ndarray,
                 params: ModelParams | None = None, classes: tuple[str, ...] = CLASSES) -> FittedModels:
    params = params or ModelParams()
    forest, booster = fit_members(x_train, y_train, params, len(classes))
    return combine(forest, booster, x_validation, y_validation, params, classes)


def _full_proba(model: RandomForestClassifier | XGBClassifier, x: np.ndarray, n_classes: int = N_CLASSES
                ) -> np.ndarray:
    """``predict_proba`` with a column for every class, even one the member never saw in training."""
    proba = model.predict_proba(x)
    if proba.shape[1] == n_classes:
        return proba
    full = np.zeros((len(x), n_classes))
    full[:, np.asarray(model.classes_, dtype=int)] = proba
    return full
