"""The parity gate: ONNX Runtime must give scikit-learn's probabilities before a model is stored.

Checked on the hold-out set and on random flowers spread over the whole input range the API
accepts, (0, 100] cm, with its edges, so a graph that agrees only on iris-shaped data is caught.
Float32 is tried first (it is what scikit-learn's own trees compare in); a model that needs
more exactness is exported with a float64 input instead, and the tolerance never moves.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime
from sklearn.pipeline import Pipeline

from iris_classifier.flowers import MAX_FEATURE_CM
from iris_classifier.model_format import INPUT_NAME, PROBABILITIES_OUTPUT
from iris_classifier.onnx_model import TENSOR_DTYPES, session_options
from iris_classifier.training.onnx_export import PRECISIONS, to_onnx

TOLERANCE = 1e-5
RANDOM_FLOWERS = 10_000
# The smallest and largest values the API accepts, in every combination.
EDGE_VALUES = (np.nextafter(0.0, 1.0), 0.1, MAX_FEATURE_CM)
PRECISION_NAMES = {dtype: name for name, (_, dtype) in PRECISIONS.items()}


@dataclass(frozen=True)
class Parity:
    precision: str
    max_difference: float
    worst_set: str
    worst_row: list[float]

    @property
    def passed(self) -> bool:
        return self.max_difference <= TOLERANCE

    def describe(self) -> str:
        return (
            f"{self.precision}: largest difference {self.max_difference:.3g} on {self.worst_set} "
            f"row {self.worst_row}"
        )


class ParityError(RuntimeError):
    """No precision gives scikit-learn's probabilities within the tolerance."""


def check_flowers(seed: int, features: int = 4) -> np.ndarray:
    """10,000 random flowers over (0, 100] cm, then every combination of the edge values."""
    rng = np.random.default_rng(seed)
    uniform = MAX_FEATURE_CM - rng.uniform(0, MAX_FEATURE_CM, size=(RANDOM_FLOWERS, features))
    edges = np.array(list(itertools.product(EDGE_VALUES, repeat=features)))
    return np.vstack([uniform, edges])


def measure(pipeline: Pipeline, model_bytes: bytes, sets: dict[str, np.ndarray]) -> Parity:
    """The worst disagreement between ONNX Runtime and `predict_proba` over `sets`."""
    session = onnxruntime.InferenceSession(
        model_bytes, session_options(), providers=["CPUExecutionProvider"]
    )
    dtype = TENSOR_DTYPES[session.get_inputs()[0].type]
    worst = Parity(PRECISION_NAMES[dtype], -1.0, "", [])
    for name, rows in sets.items():
        onnx_probabilities = session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: rows.astype(dtype)})[
            0
        ]
        difference = np.abs(onnx_probabilities - pipeline.predict_proba(rows)).max(axis=1)
        index = int(np.argmax(difference))
        if difference[index] > worst.max_difference:
            worst = Parity(worst.precision, float(difference[index]), name, rows[index].tolist())
    return worst


def export_checked(
    pipeline: Pipeline, holdout: np.ndarray, *, feature_names: Sequence[str], seed: int
) -> tuple[bytes, Parity]:
    """The ONNX model in the first precision that passes; `ParityError` naming the worst row."""
    sets = {"hold-out": holdout, "random-flower": check_flowers(seed, len(feature_names))}
    failures = []
    for precision in PRECISIONS:
        try:
            model_bytes = to_onnx(pipeline, feature_names=feature_names, precision=precision)
            parity = measure(pipeline, model_bytes, sets)
        except Exception as exc:  # an exporter or runtime without this precision for the model
            failures.append(f"{precision}: not exportable ({str(exc).splitlines()[0]})")
            continue
        if parity.passed:
            return model_bytes, parity
        failures.append(parity.describe())
    raise ParityError(
        f"ONNX Runtime's probabilities differ from scikit-learn's by more than {TOLERANCE:g}: "
        + "; ".join(failures)
    )
