"""A fitted pipeline as an ONNX graph the service can run: skl2onnx, no ZipMap, fixed names.

The graph has one input, `features` (rows, 4), and two outputs: `label` and `probabilities`
(rows, classes) as a plain tensor. Class and feature names are written into the graph's own
metadata so the service can check that the file and the store's metadata agree.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.pipeline import Pipeline

from iris_classifier.model_format import (
    CLASS_NAMES_PROPERTY,
    FEATURE_NAMES_PROPERTY,
    INPUT_NAME,
    LABEL_OUTPUT,
    PROBABILITIES_OUTPUT,
)

# ONNX operator sets the export targets: what ONNX Runtime 1.31 runs and skl2onnx 1.20 tests.
TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}
PRECISIONS = {"float32": (FloatTensorType, np.float32), "float64": (DoubleTensorType, np.float64)}


def to_onnx(
    pipeline: Pipeline, *, feature_names: Sequence[str], precision: str = "float32"
) -> bytes:
    """The serialised ONNX model of a fitted pipeline, its input in `precision`."""
    tensor_type, _ = PRECISIONS[precision]
    classifier = pipeline.steps[-1][1]
    with warnings.catch_warnings():
        # skl2onnx's SVC converter reads `probA_`/`probB_`, deprecated in scikit-learn 1.9; a
        # calibrated SVC leaves them empty, which is what the converter expects.
        warnings.filterwarnings("ignore", r"Attribute `prob[AB]_` was deprecated", FutureWarning)
        model = convert_sklearn(
            pipeline,
            initial_types=[(INPUT_NAME, tensor_type([None, len(feature_names)]))],
            options={id(classifier): {"zipmap": False}},
            target_opset=TARGET_OPSET,
        )
    outputs = [output.name for output in model.graph.output]
    if outputs != [LABEL_OUTPUT, PROBABILITIES_OUTPUT]:
        raise ValueError(f"skl2onnx named the outputs {outputs}")
    class_names = [str(name) for name in classifier.classes_]
    onnx.helper.set_model_props(
        model,
        {
            CLASS_NAMES_PROPERTY: json.dumps(class_names),
            FEATURE_NAMES_PROPERTY: json.dumps(list(feature_names)),
        },
    )
    model.doc_string = f"{type(classifier).__name__} exported from scikit-learn by skl2onnx"
    return model.SerializeToString()


def opset_versions(model_bytes: bytes) -> dict[str, int]:
    model = onnx.load_model_from_string(model_bytes)
    return {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
