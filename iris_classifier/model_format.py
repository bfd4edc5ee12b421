"""The stored model's format: the files and names train.py writes into the model store and the
service reads back. Training and serving both import them from here, so the graph one side
exports is the graph the other feeds.

Plain values only: BentoML's main process imports this module and must not load NumPy or ONNX
Runtime for it.

In code, a `model_tag` is the store's full tag (`iris_classifier:<version>`) and a
`model_version` is the version alone, as the Open Inference Protocol names it. The seed answers'
and the model card's `model_version` fields carry the full tag: that is their contract.
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


def version_of(model_tag: str) -> str:
    """The version in a model tag; a tag without a name (or "" before a model is loaded) is
    returned whole."""
    return model_tag.rpartition(":")[2]
