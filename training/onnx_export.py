"""Export the activity model to ONE ONNX graph, so serving scores with onnxruntime alone (no sklearn/xgboost).

The runner is ``model_contract.onnx_runner.OnnxScorer``; the names of inputs and outputs are the contract's.

The graph repeats ``training.model`` step by step::

    features (float32 [N, 28])
      -> forest TreeEnsembleClassifier (skl2onnx)   -> float32 [N, k1] -+
      -> booster TreeEnsembleClassifier (onnxmltools) -> float32 [N, k2] -+-> Cast DOUBLE (+ pad to 3 classes)
      -> Concat -> Clip(PROBABILITY_FLOOR, 1) -> Log -> MatMul coef.T -> Add intercept -> Softmax
      -> "probabilities" (Cast back to float32 [N, 3])
      -> Mul decision_weights -> ArgMax -> "label" (int64 [N])

Precision: the trees run in float32, as the native models effectively do (both compare float32
inputs with float32-representable thresholds; the forest's leaf averaging in float32 rather than
float64 is the only gap to native, far inside the 1e-5 parity tolerance). The stacker runs in DOUBLE, the arithmetic of
the numpy ``Stacker``, so it adds no error of its own: the 1/p slope of the log near the 1e-6
floor magnifies any float32 rounding of the members' probabilities, and the -1e9 intercept of a
class absent from validation must stay exact (only the double version is the same computation).
``label`` is taken from the double probabilities, so it
follows the native ``argmax(p * w)`` even where the float32 rounding of ``probabilities`` would
make a near tie ambiguous; ``probabilities`` is float32 because that is the serving contract
(rounding ~6e-8). NaN inputs are NOT at parity: sklearn's forest routes NaN by its own rule,
the exported trees differently; the feature transform never emits NaN.

Opsets: default domain 15 (the highest onnxmltools' xgboost converter supports) and whatever
``ai.onnx.ml`` version the converters declare (1 today; TreeEnsembleClassifier is gone from
ai.onnx.ml 5, so the merged model must not be bumped there). IR version 8 goes with opset 15.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
import onnx
import onnxmltools
from onnx import TensorProto, helper, numpy_helper
from onnxmltools.convert.common.data_types import FloatTensorType as XgbFloatTensorType
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType as SklFloatTensorType
from sklearn.ensemble import RandomForestClassifier
from xgboost import XGBClassifier

from features.transform import FEATURE_NAMES
from model_contract.artifacts import INPUT, LABEL, PROBABILITIES
from model_contract.labels import CLASSES
from training.model import N_CLASSES, PROBABILITY_FLOOR, ActivityEnsemble, SingleModel, Stacker

MAIN_OPSET = 15
ML_DOMAIN = "ai.onnx.ml"
ML_OPSET_FOR_CONVERTERS = 3  # TreeEnsembleClassifier's last version; ai.onnx.ml 5 deprecates it
IR_VERSION = 8  # onnx.helper.VERSION_TABLE: opset 15 <-> IR 8; loadable by older runtimes too

Member: TypeAlias = RandomForestClassifier | XGBClassifier


def ensemble_to_onnx(ensemble: ActivityEnsemble) -> onnx.ModelProto:
    """The whole ensemble (forest + booster + stacker + decision rule) as one checked ONNX model."""
    return _stacked_model([ensemble.forest, ensemble.booster], ensemble.stacker, ensemble.decision_weights,
                          feature_names=ensemble.feature_names, classes=ensemble.classes, name="activity_ensemble")


def single_to_onnx(model: SingleModel) -> onnx.ModelProto:
    """A single-member baseline, built by the same code as the ensemble so both are compared like for like."""
    return _stacked_model([model.member], model.stacker, model.decision_weights, feature_names=FEATURE_NAMES,
                          classes=CLASSES, name=f"activity_{model.name}")


def fallback_to_onnx(ensemble: ActivityEnsemble) -> onnx.ModelProto:
    """The scorer's middle fallback: the ensemble's XGBoost member alone, written at registration.

    An identity stacker (coef = I, intercept = 0: the booster's own probabilities, renormalised
    after the floor) and unit decision weights (plain argmax), so it needs no validation data.
    It is NOT calibrated: the booster was fitted with balanced class weights, so it over-states
    the minority classes (decline, growth) compared with the stacked champion.
    """
    single = SingleModel("xgboost", ensemble.booster, Stacker(coef=np.eye(N_CLASSES), intercept=np.zeros(N_CLASSES)),
                         np.ones(N_CLASSES))
    return single_to_onnx(single)


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (creating its directory); returns the path for logging as an artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def member_to_onnx(member: Member, n_features: int) -> onnx.ModelProto:
    """One fitted member as an ONNX model: input ``features``, output ``probabilities`` (float32 [N, classes])."""
    if isinstance(member, XGBClassifier):
        # onnxmltools' converter checks its own FloatTensorType class, not skl2onnx's
        return onnxmltools.convert_xgboost(member, initial_types=[(INPUT, XgbFloatTensorType([None, n_features]))],
                                           target_opset=MAIN_OPSET)
    if isinstance(member, RandomForestClassifier):
        return convert_sklearn(member, initial_types=[(INPUT, SklFloatTensorType([None, n_features]))],
                               options={id(member): {"zipmap": False}},
                               target_opset={"": MAIN_OPSET, ML_DOMAIN: ML_OPSET_FOR_CONVERTERS})
    raise TypeError(f"no ONNX converter for member type {type(member).__name__}")


def _member_prefix(member: Member) -> str:
    return "booster/" if isinstance(member, XGBClassifier) else "forest/"


def _stacked_model(members: Sequence[Member], stacker: Stacker, decision_weights: np.ndarray,
                   feature_names: Sequence[str], classes: Sequence[str], name: str) -> onnx.ModelProto:
    """Member graphs side by side on the shared input, then the stacker and decision rule as plain nodes."""
    n_features = int(members[0].n_features_in_)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    ml_opset = 1
    member_outputs = []
    for member in members:
        if int(member.n_features_in_) != n_features:
            raise ValueError("members were fitted on different feature counts")
        prefix = _member_prefix(member)
        graph_model = onnx.compose.add_prefix(member_to_onnx(member, n_features), prefix, rename_inputs=False)
        nodes.extend(graph_model.graph.node)
        initializers.extend(graph_model.graph.initializer)
        ml_opset = max([ml_opset] + [o.version for o in graph_model.opset_import if o.domain == ML_DOMAIN])
        as_double = prefix + "probabilities_double"
        nodes.append(helper.make_node("Cast", [prefix + PROBABILITIES], [as_double], to=TensorProto.DOUBLE,
                                      name=prefix + "cast_double"))
        member_outputs.append(_pad_to_all_classes(member, as_double, prefix, nodes, initializers))

    def constant(const_name: str, value: np.ndarray | float) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float64), const_name))
        return const_name

    coef = np.asarray(stacker.coef, dtype=np.float64)
    if coef.shape != (N_CLASSES, N_CLASSES * len(members)):
        raise ValueError(f"stacker coef has shape {coef.shape} for {len(members)} member(s)")
    nodes += [
        helper.make_node("Concat", member_outputs, ["stack/probabilities"], axis=1, name="stack/concat"),
        helper.make_node("Clip", ["stack/probabilities", constant("stack/floor", PROBABILITY_FLOOR),
                                  constant("stack/one", 1.0)], ["stack/clipped"], name="stack/clip"),
        helper.make_node("Log", ["stack/clipped"], ["stack/log"], name="stack/log"),
        helper.make_node("MatMul", ["stack/log", constant("stack/coef_t", coef.T)], ["stack/scores"],
                         name="stack/matmul"),
        helper.make_node("Add", ["stack/scores", constant("stack/intercept", stacker.intercept)], ["stack/logits"],
                         name="stack/add"),
        helper.make_node("Softmax", ["stack/logits"], ["stack/probabilities_double"], axis=1, name="stack/softmax"),
        helper.make_node("Cast", ["stack/probabilities_double"], [PROBABILITIES], to=TensorProto.FLOAT,
                         name="stack/cast_float"),
        helper.make_node("Mul", ["stack/probabilities_double", constant("decide/weights", decision_weights)],
                         ["decide/weighted"], name="decide/mul"),
        helper.make_node("ArgMax", ["decide/weighted"], [LABEL], axis=1, keepdims=0, name="decide/argmax"),
    ]
    graph = helper.make_graph(
        nodes, name,
        inputs=[helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, n_features])],
        outputs=[helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [None, N_CLASSES]),
                 helper.make_tensor_value_info(LABEL, TensorProto.INT64, [None])],
        initializer=initializers,
    )
    model = helper.make_model(graph, ir_version=IR_VERSION, producer_name="training.onnx_export",
                              opset_imports=[helper.make_opsetid("", MAIN_OPSET),
                                             helper.make_opsetid(ML_DOMAIN, ml_opset)])
    # OnnxScorer exposes these so serving can check it feeds the columns in the order the model was fitted on
    helper.set_model_props(model, {"feature_names": json.dumps(list(feature_names)),
                                   "classes": json.dumps(list(classes))})
    onnx.checker.check_model(model, full_check=True)
    return model


def _pad_to_all_classes(member: Member, probabilities: str, prefix: str, nodes: list[onnx.NodeProto],
                        initializers: list[onnx.TensorProto]) -> str:
    """Columns for every class, as ``training.model._full_proba`` does for a member that missed one in training.

    A 0/1 matrix product is exact, so a member that saw every class passes through unchanged.
    """
    seen = np.asarray(member.classes_, dtype=np.int_)
    if np.array_equal(seen, np.arange(N_CLASSES)):
        return probabilities
    scatter = np.zeros((len(seen), N_CLASSES))
    scatter[np.arange(len(seen)), seen] = 1.0
    initializers.append(numpy_helper.from_array(scatter, prefix + "class_scatter"))
    nodes.append(helper.make_node("MatMul", [probabilities, prefix + "class_scatter"], [prefix + "probabilities_full"],
                                  name=prefix + "pad_classes"))
    return prefix + "probabilities_full"
