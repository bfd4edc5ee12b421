"""The stored model's format: the files and names train.py writes into the model store and the
service reads back. Training and serving both import them from here, so the graph one side
exports is the graph the other feeds.

Plain values only: BentoML's main process imports this module and must not load NumPy or ONNX
Runtime for it.
"""

from __future__ import annotations

MODEL_FORMAT = "onnx"
MODEL_FILE = "model.onnx"
INPUT_NAME = "features"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
# Written into the ONNX file itself at export, so a graph swapped under the metadata is caught.
CLASS_NAMES_PROPERTY = "class_names"
FEATURE_NAMES_PROPERTY = "feature_names"


class ModelError(RuntimeError):
    """The stored model cannot be served; the message says why in one line."""
