"""Scores feature matrices with an exported model through onnxruntime: the serving-side twin of the model.

Only onnxruntime and numpy: the scorer and the drift job run a champion without the libraries
that trained it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from features.transform import FEATURE_NAMES
from model_contract.artifacts import INPUT, LABEL, PROBABILITIES


def as_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The model's input: the feature columns in ``FEATURE_NAMES`` order, float32 (what trees use)."""
    return frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)


class OnnxScorer:
    """One onnxruntime session over an exported model, with the feature names and classes it declares.

    One intra-op thread by default: serving answers many small concurrent requests, where a
    thread pool per call only adds overhead and oversubscribes the cores. It also keeps scores
    bit-reproducible: with more threads the tree sums are added in another order.
    """

    def __init__(self, model: bytes | str | Path | Any, intra_op_threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if hasattr(model, "SerializeToString"):  # an onnx.ModelProto, without importing onnx here
            model = model.SerializeToString()
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.feature_names: tuple[str, ...] = tuple(json.loads(metadata.get("feature_names", "[]")))
        self.classes: tuple[str, ...] = tuple(json.loads(metadata.get("classes", "[]")))

    def _run(self, output: str, x: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(x, dtype=np.float32)  # onnxruntime refuses any other dtype
        return self.session.run([output], {INPUT: features})[0]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Stacked class probabilities, float64 like the native ensemble's ``predict_proba``."""
        return self._run(PROBABILITIES, x).astype(np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices by the tuned decision rule (computed in the graph from double probabilities)."""
        return self._run(LABEL, x)
