"""The stored ONNX model, checked and run by ONNX Runtime: the servable-model check
(iris_classifier/servable.py) loads it, the service runs it for every request, and training's
parity gate and comparison run it the same way.

One code path serves every model kind train.py exports (linear, trees, SVM): a single input
`features` of shape (rows, 4) and a probability output of shape (rows, classes). Nothing here
imports scikit-learn, SciPy or pandas, and nothing unpickles: the served store entry holds an
ONNX graph and JSON metadata only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from iris_classifier.model_format import (
    CLASS_NAMES_PROPERTY,
    FEATURE_NAMES_PROPERTY,
    INPUT_NAME,
    LABEL_OUTPUT,
    MODEL_FILE,
    MODEL_FORMAT,
    PROBABILITIES_OUTPUT,
    ModelError,
)

if TYPE_CHECKING:  # imported where a session is made: a process that only checks never loads it
    import onnxruntime

TENSOR_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def session_options() -> onnxruntime.SessionOptions:
    import onnxruntime

    # One replica serves with one worker, and the Deployment scales by replicas: more threads
    # per request would only fight over the pod's CPU for a few microseconds of arithmetic.
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initialisers are not the client's
    return options


class OnnxClassifier:
    """Class probabilities from an ONNX Runtime session, for one flower or a batch."""

    def __init__(self, session: onnxruntime.InferenceSession, class_names: Sequence[str]) -> None:
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.dtype = TENSOR_DTYPES[session.get_inputs()[0].type]
        self.session = session
        self._outputs = [PROBABILITIES_OUTPUT]
        # The single-flower path reuses one bound input row and one bound output row, so a
        # request costs ONNX Runtime's arithmetic and no per-call allocation or input checks
        # (benchmarks/README.md compares it with `InferenceSession.run`).
        self._row = np.zeros((1, session.get_inputs()[0].shape[1]), self.dtype)
        self._row_probabilities = np.zeros((1, len(self.class_names)), self.dtype)
        self._binding = session.io_binding()
        self._binding.bind_cpu_input(INPUT_NAME, self._row)
        self._binding.bind_output(
            PROBABILITIES_OUTPUT,
            "cpu",
            0,
            self.dtype,
            list(self._row_probabilities.shape),
            self._row_probabilities.ctypes.data,
        )
        self._binding.bind_output(LABEL_OUTPUT)
        self._probabilities_row = self._row_probabilities[0]  # a view, made once

    def predict_proba_one(self, features: Sequence[float]) -> list[float]:
        """Probabilities of each class for one flower.

        Not re-entrant: the bound row is shared, which is safe because the service's APIs are
        coroutines that run this without awaiting in between.
        """
        self._row[0] = features
        self.session.run_with_iobinding(self._binding)
        return self._probabilities_row.tolist()

    def predict_proba_one_json(self, features: Sequence[float]) -> tuple[list[float], bytes]:
        """`predict_proba_one`'s probabilities, and the same values as the JSON of a float32
        array, as the tensor protocol answers them. Written from the bound row before the next
        call reuses it: an array built again from the list costs more than the writing."""
        self._row[0] = features
        self.session.run_with_iobinding(self._binding)
        row = self._probabilities_row
        single = row if self.dtype is np.float32 else row.astype(np.float32)
        return row.tolist(), single_precision_json(single)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities of each class for a (rows, 4) array of flowers."""
        feed = {INPUT_NAME: features.astype(self.dtype, copy=False)}
        return self.session.run(self._outputs, feed)[0]


def single_precision_json(row: np.ndarray) -> bytes:
    """A float32 row as JSON: single precision's shortest digits, as orjson writes them."""
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)


def load(directory: Path, metadata: Mapping[str, Any], feature_names: Sequence[str]):
    """The checked classifier of a stored model directory; `ModelError` if it cannot serve.

    Checked before any request: the file is there and is an ONNX graph ONNX Runtime can run,
    its input and outputs are the names, types and shapes the service feeds and reads, its
    class names match the metadata's, and its features are the ones the contract sends.
    """
    if metadata.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"not an ONNX model (metadata format {metadata.get('format')!r}); "
            "store one with train.py"
        )
    path = directory / metadata.get("model_file", MODEL_FILE)
    if not path.is_file():
        raise ModelError(f"{path.name} is missing from the model directory")
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(
            str(path), session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ONNX Runtime raises its own exception types for bad files
        raise ModelError(
            f"{path.name} is not a model ONNX Runtime can load: {_first_line(exc)}"
        ) from exc
    class_names = _check_names(session, metadata, feature_names)
    _check_signature(session, len(class_names))
    classifier = OnnxClassifier(session, class_names)
    probe = classifier.predict_proba(np.ones((2, len(feature_names))))
    if probe.shape != (2, len(class_names)) or not np.allclose(probe.sum(axis=1), 1, atol=1e-3):
        raise ModelError(
            f"{path.name} answers a probe with {probe.shape} values that are not probabilities"
        )
    return classifier


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_names(
    session: onnxruntime.InferenceSession,
    metadata: Mapping[str, Any],
    feature_names: Sequence[str],
) -> list[str]:
    properties = session.get_modelmeta().custom_metadata_map
    class_names = [str(name) for name in metadata.get("class_names", [])]
    in_model = json.loads(properties.get(CLASS_NAMES_PROPERTY, "null"))
    if not class_names or in_model != class_names:
        raise ModelError(
            f"class names in the metadata {class_names} do not match the ONNX model's {in_model}"
        )
    trained_on = list(metadata.get("feature_names", []))
    in_graph = json.loads(properties.get(FEATURE_NAMES_PROPERTY, "null"))
    if trained_on != list(feature_names) or in_graph != list(feature_names):
        raise ModelError(
            f"the model was trained on features {trained_on} (ONNX model: {in_graph}); "
            f"the contract sends {list(feature_names)}"
        )
    return class_names


def _check_signature(session: onnxruntime.InferenceSession, classes: int) -> None:
    inputs = [(i.name, i.type, i.shape) for i in session.get_inputs()]
    if (
        len(inputs) != 1
        or inputs[0][0] != INPUT_NAME
        or inputs[0][1] not in TENSOR_DTYPES
        or len(inputs[0][2]) != 2
        or isinstance(inputs[0][2][0], int)
        or inputs[0][2][1] != 4
    ):
        raise ModelError(
            f"unexpected ONNX input {inputs}: expected one float tensor {INPUT_NAME!r} of "
            "shape [rows, 4] with a dynamic row count"
        )
    outputs = {o.name: (o.type, o.shape) for o in session.get_outputs()}
    dtype, shape = outputs.get(PROBABILITIES_OUTPUT, (None, None))
    # A symbolic class dimension is allowed: the probe run in `load` checks the count then.
    if (
        set(outputs) != {LABEL_OUTPUT, PROBABILITIES_OUTPUT}
        or dtype != inputs[0][1]
        or shape is None
        or len(shape) != 2
        or isinstance(shape[0], int)
        or (isinstance(shape[1], int) and shape[1] != classes)
    ):
        raise ModelError(
            f"unexpected ONNX outputs {outputs}: expected {LABEL_OUTPUT!r} and "
            f"{PROBABILITIES_OUTPUT!r}, a {inputs[0][1]} of shape [rows, {classes}]"
        )
