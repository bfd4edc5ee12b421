"""The fast path must give scikit-learn's answers: it replaces predict_proba when serving."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from iris_classifier.model import LinearModel, UnsupportedPipelineError, build_pipeline


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    features, target = load_iris(return_X_y=True)
    return features, target


def fitted(pipeline: Pipeline, features: np.ndarray, target: np.ndarray) -> Pipeline:
    return pipeline.fit(features, target)


@pytest.mark.parametrize(
    "pipeline",
    [
        build_pipeline(seed=42),
        Pipeline([("scale", StandardScaler()), ("classifier", LogisticRegression(max_iter=1000))]),
        Pipeline(
            [
                ("scale", StandardScaler(with_mean=False)),
                ("classifier", LogisticRegression(max_iter=1000)),
            ]
        ),
    ],
    ids=["served", "standard-scaled", "scaled-without-mean"],
)
def test_fast_path_agrees_with_sklearn_on_whole_dataset(iris, pipeline: Pipeline) -> None:
    features, target = iris
    model = LinearModel(fitted(pipeline, features, target))
    expected = pipeline.predict_proba(features)
    np.testing.assert_allclose(model.predict_proba(features), expected, rtol=0, atol=1e-9)
    singles = np.array([model.predict_proba_one(tuple(row)) for row in features])
    np.testing.assert_allclose(singles, expected, rtol=0, atol=1e-9)


def test_fast_path_agrees_far_outside_the_training_data(iris) -> None:
    features, target = iris
    pipeline = fitted(build_pipeline(seed=42), features, target)
    model = LinearModel(pipeline)
    rng = np.random.default_rng(7)
    extreme = rng.uniform(0.01, 100, size=(2000, 4))
    np.testing.assert_allclose(
        model.predict_proba(extreme), pipeline.predict_proba(extreme), rtol=0, atol=1e-9
    )
    for row in extreme[:200]:
        np.testing.assert_allclose(
            model.predict_proba_one(tuple(row)), pipeline.predict_proba([row])[0], atol=1e-9
        )


def test_binary_model_agrees_with_sklearn(iris) -> None:
    features, target = iris
    two_classes = target > 0
    pipeline = fitted(build_pipeline(seed=1), features[two_classes], target[two_classes])
    model = LinearModel(pipeline)
    assert model.binary
    expected = pipeline.predict_proba(features)
    np.testing.assert_allclose(model.predict_proba(features), expected, atol=1e-9)
    np.testing.assert_allclose(model.predict_proba_one(tuple(features[0])), expected[0], atol=1e-9)


def test_class_names_come_from_the_classifier(iris) -> None:
    features, target = iris
    names = np.array(["setosa", "versicolor", "virginica"])[target]
    model = LinearModel(fitted(build_pipeline(seed=42), features, names))
    assert model.class_names == ("setosa", "versicolor", "virginica")


@pytest.mark.parametrize(
    "pipeline",
    [
        Pipeline([("scale", MinMaxScaler()), ("classifier", LogisticRegression(max_iter=1000))]),
        Pipeline([("scale", StandardScaler()), ("classifier", StandardScaler())]),
    ],
    ids=["unknown-transform", "not-a-classifier"],
)
def test_unsupported_pipeline_is_refused(iris, pipeline: Pipeline) -> None:
    features, target = iris
    pipeline.fit(features, target)
    with pytest.raises(UnsupportedPipelineError):
        LinearModel(pipeline)


def test_training_is_reproducible(iris) -> None:
    features, target = iris
    first = fitted(build_pipeline(seed=3), features, target)
    second = fitted(build_pipeline(seed=3), features, target)
    np.testing.assert_array_equal(
        first.named_steps["classifier"].coef_, second.named_steps["classifier"].coef_
    )


def test_saved_weights_answer_like_scikit_learn(iris, tmp_path) -> None:
    features, target = iris
    pipeline = fitted(build_pipeline(seed=42), features, target)
    LinearModel(pipeline).save(tmp_path / "weights.json")

    loaded = LinearModel.load(tmp_path / "weights.json")

    expected = pipeline.predict_proba(features)
    np.testing.assert_allclose(loaded.predict_proba(features), expected, rtol=0, atol=1e-9)
    singles = np.array([loaded.predict_proba_one(row) for row in features])
    np.testing.assert_allclose(singles, expected, rtol=0, atol=1e-9)
