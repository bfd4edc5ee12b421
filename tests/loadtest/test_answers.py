"""The load test's correctness checks: every answer consistent in itself, the reference flowers'
answers equal to those fixed in loadtest/reference_answers.json, and that file current."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES, MAX_FEATURE_CM
from iris_classifier.model_format import INPUT_NAME, PROBABILITIES_OUTPUT
from iris_classifier.ranges import TrainingRanges
from iris_classifier.serving.model.prediction import Predictor
from iris_classifier.training.data import TrainingData, load_bundled
from iris_classifier.training.estimators import build_pipeline
from iris_classifier.training.evaluation import fit_and_evaluate
from iris_classifier.training.parity import export_checked
from loadtest import answers
from loadtest.answers import (
    MODEL_TOLERANCE,
    PROBABILITY_SUM_TOLERANCE,
    ReferenceAnswers,
    batch_problem,
    classification_problem,
    load_fixed_answers,
)
from tests.support.model_store import MODEL_NAME, stored_metadata
from tests.support.reference_model import reference_probabilities
from tests.support.softmax_classifier import OneRowJson

GOOD_ANSWER = {
    "class": "setosa",
    "probability": 0.97,
    "probabilities": {"setosa": 0.9700, "versicolor": 0.0200, "virginica": 0.0100},
    "model_version": "iris_classifier:abc",
    "out_of_range": [],
}


class GivenProbabilities(OneRowJson):
    """A model that answers each row with the probabilities it was given, in the float32 the
    stored model computes in, so the service's own Predictor rounds them."""

    class_names = CLASS_NAMES
    dtype = np.float32

    def __init__(self, rows: list[dict[str, float]]) -> None:
        self.rows = np.array([[row[name] for name in CLASS_NAMES] for row in rows], self.dtype)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self.rows[: len(features)]

    def predict_proba_one(self, features: object) -> list[float]:
        return self.rows[0].tolist()


class Unrecorded:
    """Model metrics and drift counts that count nothing: these answers are not traffic."""

    def record_one(self, *args: object, **kwargs: object) -> None:
        pass

    def record_batch(self, *args: object) -> None:
        pass


# Wide enough that no flower is out of range; the answers checked here do not look at it.
EVERY_FLOWER = TrainingRanges(FEATURE_NAMES, [0.0] * 4, [MAX_FEATURE_CM] * 4)


def predictor(rows: list[dict[str, float]]) -> Predictor:
    return Predictor(
        GivenProbabilities(rows),  # type: ignore[arg-type]
        EVERY_FLOWER,
        Unrecorded(),  # type: ignore[arg-type]
        "iris_classifier:abc",
        drift=Unrecorded(),  # type: ignore[arg-type]
    )


def served_answer(probabilities: dict[str, float]) -> dict:
    """What the service answers for a flower with these unrounded probabilities."""
    return predictor([probabilities]).classify([1.0] * len(FEATURE_NAMES))


def served_batch(rows: list[dict[str, float]]) -> dict:
    """What the service answers for a batch whose flowers have these probabilities."""
    return predictor(rows).classify_many(np.ones((len(rows), len(FEATURE_NAMES))))


# --- every answer -----------------------------------------------------------------------------


def test_a_consistent_answer_passes() -> None:
    assert classification_problem(GOOD_ANSWER) is None


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("class", "rose", "unknown class"),
        ("class", "versicolor", "not the most probable"),
        ("probability", 1.5, "not in [1/3, 1]"),
        ("probability", 0.95, "not probabilities['setosa'] rounded"),
        ("probabilities", {"setosa": 1.0}, "do not cover"),
        # Off by 0.0010: more than rounding 3 values to 4 places can lose.
        ("probabilities", {"setosa": 0.9710, "versicolor": 0.0200, "virginica": 0.0100}, "sum"),
        ("model_version", "", "model_version"),
    ],
)
def test_an_inconsistent_answer_is_a_failure(field: str, value: object, why: str) -> None:
    assert why in (classification_problem({**GOOD_ANSWER, field: value}) or "")


def test_the_sum_tolerance_is_what_rounding_to_4_places_can_lose() -> None:
    assert pytest.approx(len(CLASS_NAMES) * 0.00005, abs=1e-8) == PROBABILITY_SUM_TOLERANCE
    third = {name: 1 / 3 for name in CLASS_NAMES}  # answered as 0.3333 each: 0.9999 in all
    assert classification_problem(served_answer(third)) is None
    short = {"setosa": 0.3333, "versicolor": 0.3333, "virginica": 0.3332}
    assert "sum" in (classification_problem({**served_answer(short), "probabilities": short}) or "")


def test_every_answer_a_correct_service_rounds_passes() -> None:
    """No false alarm: 20,000 random probability vectors, float32 as the model computes them,
    answered as the service rounds them, skewed towards near-ties and rounding boundaries."""
    rng = np.random.default_rng(3)
    rows = np.concatenate(
        [rng.dirichlet([0.3] * 3, 10_000), rng.dirichlet([50.0] * 3, 10_000)]
    ).astype(np.float32)
    for row in rows:
        probabilities = dict(zip(CLASS_NAMES, map(float, row), strict=True))
        assert classification_problem(served_answer(probabilities)) is None, probabilities


def test_a_batch_answer_must_have_one_plausible_prediction_per_flower() -> None:
    answer = {"predictions": [{"class": "setosa", "probability": 0.9}], "model_version": "v"}
    assert batch_problem(answer, 1) is None
    assert "1 predictions for 2 flowers" in (batch_problem(answer, 2) or "")
    low = {"predictions": [{"class": "setosa", "probability": 0.2}], "model_version": "v"}
    assert "not in [1/3, 1]" in (batch_problem(low, 1) or "")


# --- the fixed answers -----------------------------------------------------------------------------


FIXED = load_fixed_answers()


def test_the_reference_flowers_cover_every_class_and_leave_no_near_tie() -> None:
    assert {answer.species for answer in FIXED} == set(CLASS_NAMES)
    for answer in FIXED:
        top, second = sorted(answer.probabilities.values())[-2:][::-1]
        # A tie closer than rounding could let a correct service answer the other class.
        assert top - second > 2 * (0.00005 + MODEL_TOLERANCE), answer


def test_the_fixed_answers_pass_as_a_correct_service_gives_them() -> None:
    reference = ReferenceAnswers(FIXED)
    for index, answer in enumerate(FIXED):
        # A correct service may be off by the ONNX parity tolerance before it rounds.
        nudged = {name: value + MODEL_TOLERANCE for name, value in answer.probabilities.items()}
        for probabilities in (answer.probabilities, nudged):
            served = served_answer(probabilities)
            assert reference.single_problem(index, served, "replica-1") is None, served
    batch = served_batch([answer.probabilities for answer in FIXED])
    assert reference.batch_problem(batch, "replica-2") is None
    result = reference.gate({"replica-1": 40, "replica-2": 41})
    assert result.passed, result.detail


def test_a_consistent_answer_of_another_model_fails() -> None:
    """Well formed and consistent, but off the fixed answer by more than rounding."""
    reference = ReferenceAnswers(FIXED)
    index, answer = 1, FIXED[1]
    species = answer.species
    other = next(name for name in CLASS_NAMES if name != species)
    shifted = {**answer.probabilities}
    shifted[species] -= 0.0002
    shifted[other] += 0.0002
    served = served_answer(shifted)
    assert classification_problem(served) is None
    assert "expected" in (reference.single_problem(index, served, "replica-2") or "")
    result = reference.gate({"replica-1": 1, "replica-2": 1})
    assert not result.passed
    assert "1 differed; first: reference flower 1 on replica-2" in result.detail


@pytest.mark.parametrize("estimator", ["random-forest", "gradient-boosting", "svm"])
def test_every_other_estimator_fails_the_fixed_answers(estimator: str) -> None:
    """The negative control: the project's other models, trained on the same data, answer the
    reference flowers consistently, and must still fail."""
    data = load_bundled()
    pipeline = build_pipeline(estimator, 42).fit(data.features, data.species)
    features = pd.DataFrame([answer.flower for answer in FIXED], columns=data.features.columns)
    rows = [
        dict(zip(map(str, pipeline.classes_), map(float, row), strict=True))
        for row in pipeline.predict_proba(features)
    ]
    reference = ReferenceAnswers(FIXED)
    problems = [
        reference.single_problem(i, served_answer(row), "other") for i, row in enumerate(rows)
    ]
    assert all(classification_problem(served_answer(row)) is None for row in rows)
    assert any(problems), rows
    assert not reference.gate({"other": len(rows)}).passed


def test_a_batch_with_a_wrong_row_fails() -> None:
    reference = ReferenceAnswers(FIXED)
    batch = served_batch([answer.probabilities for answer in FIXED])
    swapped = {**batch["predictions"][0], "class": FIXED[1].species}
    batch["predictions"][0] = swapped
    assert "row 0: class" in (reference.batch_problem(batch, "replica-1") or "")


def test_the_reference_gate_needs_every_replica_checked() -> None:
    reference = ReferenceAnswers(FIXED)
    assert not reference.gate({"replica-1": 10}).passed
    assert reference.single_problem(0, served_answer(FIXED[0].probabilities), "replica-1") is None
    result = reference.gate({"replica-1": 10, "replica-2": 10})
    assert not result.passed
    assert "never checked on replica-2" in result.detail


# --- the file is current -------------------------------------------------------------------------


def test_the_fixed_answers_are_those_of_a_freshly_trained_default_model(trained_model: str) -> None:
    """scikit-learn's own answers from the model train.py stores by default (the file was
    written by ONNX Runtime from the same model): `python -m loadtest.answers --write` after a
    change that moves them."""
    fresh = reference_probabilities(trained_model, [answer.flower for answer in FIXED])
    written_fresh = answers.as_written([[row[name] for name in CLASS_NAMES] for row in fresh])
    assert answers.differing_answers(FIXED, written_fresh) == []
    written = json.loads(answers.REFERENCE_ANSWERS_FILE.read_text())["model"]
    stored = stored_metadata_of(trained_model)
    assert written == {key: stored[key] for key in answers.PROVENANCE_KEYS}


def test_the_answers_tool_allows_the_model_tolerance_and_no_more() -> None:
    """Two correct trainings on different CPUs may write 0.535061 and 0.53506 for one figure."""
    fixed = [answer.probabilities for answer in FIXED]
    within = [
        {name: round(value + MODEL_TOLERANCE, answers.FILE_PLACES) for name, value in row.items()}
        for row in fixed
    ]
    assert answers.differing_answers(FIXED, within) == []
    beyond = [dict(row) for row in fixed]
    beyond[3]["versicolor"] += 2 * MODEL_TOLERANCE
    assert [line.split(":")[0] for line in answers.differing_answers(FIXED, beyond)] == ["flower 3"]


def test_the_model_tolerance_is_the_parity_gates() -> None:
    """The load test does not import the training code; the two figures are one bound."""
    from iris_classifier.training import parity

    assert MODEL_TOLERANCE == parity.TOLERANCE


def retrained_answers(data: TrainingData, estimator: str | None = None, **params: object) -> list:
    """The reference flowers' probabilities, as the answers tool writes them, from a model
    trained and exported the way train.py does by default, from `data`."""
    import onnxruntime

    import train

    defaults = train.parse_args([])
    pipeline = build_pipeline(estimator or defaults.model, defaults.seed).set_params(**params)
    fitted, _, holdout = fit_and_evaluate(
        pipeline, data, test_size=defaults.test_size, folds=defaults.folds, seed=defaults.seed
    )
    model_bytes, parity = export_checked(
        fitted, holdout, feature_names=FEATURE_NAMES, seed=defaults.seed
    )
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    flowers = np.array([[answer.flower[name] for name in FEATURE_NAMES] for answer in FIXED])
    dtype = np.float32 if parity.precision == "float32" else np.float64
    return answers.as_written(
        session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: flowers.astype(dtype)})[0]
    )


def rounded_differently(data: TrainingData, seed: int) -> TrainingData:
    """The same data with some values a unit in the last place away: what another CPU's
    arithmetic amounts to, by the time it reaches the solver."""
    rng = np.random.default_rng(seed)
    features = data.features.to_numpy()
    nudge = rng.choice([-1.0, 0.0, 1.0], size=features.shape) * np.finfo(float).eps
    return replace(data, features=data.features * (1 + nudge))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_model_trained_where_arithmetic_rounds_differently_keeps_the_fixed_answers(
    seed: int,
) -> None:
    """Another CPU: the answers tool and the load test's gate both accept its model."""
    perturbed = rounded_differently(load_bundled(), seed)
    assert not perturbed.features.equals(load_bundled().features)
    computed = retrained_answers(perturbed)
    assert answers.differing_answers(FIXED, computed) == []
    reference = ReferenceAnswers(FIXED)
    for index, probabilities in enumerate(computed):
        assert reference.single_problem(index, served_answer(probabilities), "other-cpu") is None
    assert reference.batch_problem(served_batch(computed), "other-cpu") is None


@pytest.mark.parametrize(
    ("estimator", "params"),
    [("random-forest", {}), (None, {"classifier__C": 0.99})],
    ids=["another-estimator", "regularised-a-little-more"],
)
def test_a_model_trained_otherwise_fails_the_fixed_answers(
    estimator: str | None, params: dict
) -> None:
    """The negative control of the test above: same data, a genuinely different model."""
    computed = retrained_answers(load_bundled(), estimator, **params)
    assert answers.differing_answers(FIXED, computed)
    reference = ReferenceAnswers(FIXED)
    problems = [
        reference.single_problem(index, served_answer(probabilities), "wrong")
        for index, probabilities in enumerate(computed)
    ]
    assert any(problems), computed


def stored_metadata_of(model_tag: str) -> dict:
    import bentoml

    return stored_metadata(Path(bentoml.models.get(model_tag).path))


def test_the_answers_tool_finds_the_file_current_and_rewrites_a_stale_one(
    trained_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert trained_model.startswith(f"{MODEL_NAME}:")
    assert answers.main([]) == 0
    stale = tmp_path / "reference_answers.json"
    shutil.copy(answers.REFERENCE_ANSWERS_FILE, stale)
    document = json.loads(stale.read_text())
    document["flowers"][2]["probabilities"] = {"setosa": 0.1, "versicolor": 0.2, "virginica": 0.7}
    stale.write_text(json.dumps(document))
    monkeypatch.setattr(answers, "REFERENCE_ANSWERS_FILE", stale)
    assert answers.main([]) == 1
    assert answers.main(["--write"]) == 0
    assert answers.main([]) == 0
    # The rewrite is the committed file up to what a model trained on another CPU may move:
    # the same model, flowers and order, each probability within MODEL_TOLERANCE.
    committed_path = Path(answers.__file__).with_name("reference_answers.json")
    rewritten, committed = json.loads(stale.read_text()), json.loads(committed_path.read_text())
    assert rewritten["model"] == committed["model"]
    assert [entry["flower"] for entry in rewritten["flowers"]] == [
        entry["flower"] for entry in committed["flowers"]
    ]
    rewritten_answers = [answer.probabilities for answer in load_fixed_answers(stale)]
    assert answers.differing_answers(load_fixed_answers(committed_path), rewritten_answers) == []


@pytest.mark.integration
def test_the_answers_tool_checks_a_running_replica_against_the_file(
    live_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a canary's pre-rollout check runs: the replica's answers, one by one and as a
    batch, are the file's; one changed answer in the file fails it."""
    assert answers.main(["--url", live_server]) == 0
    other = tmp_path / "reference_answers.json"
    document = json.loads(answers.REFERENCE_ANSWERS_FILE.read_text())
    document["flowers"][2]["probabilities"] = {"setosa": 0.1, "versicolor": 0.2, "virginica": 0.7}
    other.write_text(json.dumps(document))
    monkeypatch.setattr(answers, "REFERENCE_ANSWERS_FILE", other)
    wrong = answers.served_answers_problems(live_server, load_fixed_answers())
    assert len(wrong) == 2, wrong
    assert wrong[0].startswith("reference flower 2 on live-replica-1")
    assert answers.main(["--url", live_server]) == 1
