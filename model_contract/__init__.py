"""The model contract: what the trainer, the scorer and the monitors agree on about a model.

Classes and labels, how a model is judged, the artifact names of a registered version, the ONNX
runner, the MLflow registry client and its aliases, the training reference's statistics. It sits
below ``training/``, ``serving/`` and ``monitoring/`` and imports none of them, nor scikit-learn,
XGBoost or Spark: the scorer runs a champion with onnxruntime alone.
"""
