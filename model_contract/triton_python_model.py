"""Triton's Python-backend model for one registered version: ONNX Runtime over the version's ``model.onnx``.

``model_contract.triton_repository`` copies this file as ``<repository>/<model>/<version>/model.py``; it runs
inside Triton's Python-backend stub, not in the platform's processes, and imports nothing of the
platform. The Triton server of the ``nvidia-pytriton`` wheel has no ONNX Runtime backend, so the
version's ONNX graph runs in ONNX Runtime here, one session per model instance, with the settings of
the scorer's in-process ``OnnxScorer`` (one intra-op thread, sequential), so both engines compute
the same floats.

Two properties of the stub shape this file:

- it starts Python isolated (``PYTHONPATH`` is not read), so the directories listed in the
  server's ``PYTHONPATH`` are added to ``sys.path`` here, first, before numpy is imported;
- it was built for numpy 1: with numpy 2 its numpy conversions (``as_numpy``, ``Tensor(name, array)``)
  read a wrong item size. Tensors therefore cross by DLPack in both directions: inputs through
  ``numpy.from_dlpack`` of the stub's tensor, outputs through ``Tensor.from_dlpack`` of a numpy
  capsule. The stub marks a consumed capsule with a name numpy does not know, so numpy's capsule
  destructor would free the array a second time; renaming it to DLPack's own ``used_dltensor``
  leaves the one release to the stub, which owns the tensor from then on.
"""

import ctypes
import os
import sys

for _entry in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    if _entry and _entry not in sys.path:
        sys.path.insert(0, _entry)

import numpy as np  # noqa: E402 - only after the server's PYTHONPATH is on sys.path
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

INPUT = "features"
OUTPUTS = ("probabilities", "label")
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_capsule_name.restype = ctypes.c_int
_USED = b"used_dltensor"


def _output(name, array):
    """A stub tensor that owns ``array`` (through its DLPack capsule; see the module docstring)."""
    array = np.ascontiguousarray(array)
    capsule = array.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _USED)
    return tensor


class TritonPythonModel:
    """One ONNX Runtime session per instance; a batch of requests is scored in one ``run``."""

    def initialize(self, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        inputs = [np.from_dlpack(pb_utils.get_input_tensor_by_name(request, INPUT)) for request in requests]
        sizes = [len(x) for x in inputs]
        features = np.ascontiguousarray(np.concatenate(inputs) if len(inputs) > 1 else inputs[0], dtype=np.float32)
        probabilities, label = self.session.run(list(OUTPUTS), {INPUT: features})
        responses = []
        start = 0
        for size in sizes:
            rows = slice(start, start + size)
            start += size
            responses.append(pb_utils.InferenceResponse([
                _output(OUTPUTS[0], probabilities[rows].astype(np.float32)),
                _output(OUTPUTS[1], label[rows].astype(np.int64).reshape(-1, 1)),
            ]))
        return responses
