"""ONNX export and its parity gate, per estimator: ONNX Runtime must answer as scikit-learn does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from sklearn.datasets import load_iris

from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES
from iris_classifier.onnx_model import session_options
from iris_classifier.training.estimators import ESTIMATORS, build_pipeline
from iris_classifier.training.onnx_export import to_onnx
from iris_classifier.training.parity import (
    EDGE_VALUES,
    RANDOM_FLOWERS,
    TOLERANCE,
    ParityError,
    check_flowers,
    export_checked,
    measure,
)

SPECIES = np.array(CLASS_NAMES)
TRAINING_README = Path(__file__).resolve().parents[2] / "iris_classifier/training/README.md"


def test_the_readme_says_the_float32_choice_depends_on_the_cpu() -> None:
    text = " ".join(TRAINING_README.read_text().split())
    assert len(ESTIMATORS) == 4
    assert "All four estimators pass in float32 here" in text
    assert "the gate exports that model in float64" in text


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    features, target = load_iris(return_X_y=True)
    return features, SPECIES[target]


def session(model_bytes: bytes) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(
        model_bytes, session_options(), providers=["CPUExecutionProvider"]
    )


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_onnx_runtime_matches_scikit_learn(iris, estimator: str) -> None:
    """What holds on any CPU: probabilities within the parity tolerance, on rows the gate never
    saw; labels wherever that tolerance cannot swap the top two classes; and float32 unless
    float32 misses the tolerance on this CPU, whose kernels decide that margin."""
    features, species = iris
    pipeline = build_pipeline(estimator, seed=42).fit(features[::2], species[::2])
    sets = {"hold-out": features[1::2], "random-flower": check_flowers(seed=7)}
    model_bytes, parity = export_checked(
        pipeline, sets["hold-out"], feature_names=FEATURE_NAMES, seed=7
    )
    assert parity.passed
    if parity.precision != "float32":
        in_float32 = to_onnx(pipeline, feature_names=FEATURE_NAMES, precision="float32")
        assert not measure(pipeline, in_float32, sets).passed, "float32 passed, yet was not used"
    runtime = session(model_bytes)
    dtype = np.float32 if parity.precision == "float32" else np.float64
    for rows in (features, check_flowers(seed=11)):
        labels, probabilities = runtime.run(
            ["label", "probabilities"], {"features": rows.astype(dtype)}
        )
        expected = pipeline.predict_proba(rows)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE)
        # Each of the top two may move by the tolerance: a closer pair may come out either way.
        second, top = np.sort(expected, axis=1)[:, -2:].T
        clear = top - second > 2 * TOLERANCE
        assert clear.sum() > len(rows) / 2, "too few rows with a clear class to check labels"
        np.testing.assert_array_equal(
            labels[clear], pipeline.classes_[expected.argmax(axis=1)][clear]
        )


def test_graph_has_fixed_names_a_dynamic_batch_and_no_zipmap(iris) -> None:
    features, species = iris
    pipeline = build_pipeline("random-forest", seed=1).fit(features, species)
    runtime = session(to_onnx(pipeline, feature_names=FEATURE_NAMES))
    [graph_input] = runtime.get_inputs()
    assert (graph_input.name, graph_input.type) == ("features", "tensor(float)")
    assert isinstance(graph_input.shape[0], str | None)
    assert graph_input.shape[1] == 4
    outputs = {output.name: output.type for output in runtime.get_outputs()}
    # A ZipMap would answer a list of dicts; a plain tensor is what the service reads.
    assert outputs == {"label": "tensor(string)", "probabilities": "tensor(float)"}
    properties = runtime.get_modelmeta().custom_metadata_map
    assert json.loads(properties["class_names"]) == list(SPECIES)
    assert json.loads(properties["feature_names"]) == list(FEATURE_NAMES)
    for rows in (1, 7, 1000):
        probabilities = runtime.run(["probabilities"], {"features": np.ones((rows, 4), "f4")})[0]
        assert probabilities.shape == (rows, 3)


def test_check_flowers_cover_the_valid_range_and_its_edges() -> None:
    flowers = check_flowers(seed=5)
    assert len(flowers) == RANDOM_FLOWERS + len(EDGE_VALUES) ** 4
    assert flowers.min() > 0
    assert flowers.max() <= 100
    assert flowers.min() == np.nextafter(0, 1)
    assert (flowers == 100).all(axis=1).any()
    # Random flowers reach both ends of the range, not only iris-sized values.
    assert flowers[:RANDOM_FLOWERS].min() < 1
    assert flowers[:RANDOM_FLOWERS].max() > 99


def test_export_that_disagrees_is_refused_naming_the_worst_row(iris, monkeypatch) -> None:
    from iris_classifier.training import parity

    features, species = iris
    pipeline = build_pipeline("logistic-regression", seed=42).fit(features, species)
    honest = pipeline.predict_proba
    # scikit-learn answering a little differently for one flower must be caught.
    skewed_row = features[17]

    def skewed(rows: np.ndarray) -> np.ndarray:
        probabilities = honest(rows)
        probabilities[(rows == skewed_row).all(axis=1)] += [2e-5, -2e-5, 0]
        return probabilities

    monkeypatch.setattr(pipeline, "predict_proba", skewed)
    with pytest.raises(ParityError) as refused:
        parity.export_checked(pipeline, features, feature_names=FEATURE_NAMES, seed=1)
    message = str(refused.value)
    assert f"hold-out row {skewed_row.tolist()}" in message
    assert "float32" in message
    assert "float64" in message
