"""What a correct answer looks like, so that a fast wrong answer counts as a failure.

Every answer must be well formed; the answers for a fixed set of flowers must moreover be the
very answers the service gave before the load, on every replica.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iris_classifier.flowers import CLASS_NAMES
from iris_classifier.serving.contract import SAMPLE_FLOWER
from loadtest.gates import GateResult

# Probabilities come back rounded to 4 places, so their sum may miss 1 by a few ten-thousandths.
PROBABILITY_SUM_TOLERANCE = 0.01


def _prediction_problem(prediction: Any) -> str | None:
    if not isinstance(prediction, dict):
        return f"prediction is not an object: {prediction!r}"
    species = prediction.get("class")
    if species not in CLASS_NAMES:
        return f"unknown class {species!r}"
    probability = prediction.get("probability")
    if not isinstance(probability, int | float) or not 0.0 <= probability <= 1.0:
        return f"probability {probability!r} is not in [0, 1]"
    return None


def classification_problem(body: Any) -> str | None:
    """Why a `/iris/classify_iris` answer is wrong, or None when it is right."""
    if problem := _prediction_problem(body):
        return problem
    probabilities = body.get("probabilities")
    if not isinstance(probabilities, dict) or set(probabilities) != set(CLASS_NAMES):
        return f"probabilities {probabilities!r} do not cover {CLASS_NAMES}"
    if not math.isclose(sum(probabilities.values()), 1.0, abs_tol=PROBABILITY_SUM_TOLERANCE):
        return f"probabilities sum to {sum(probabilities.values())}, not 1"
    if not body.get("model_version"):
        return "model_version is missing"
    return None


def batch_problem(body: Any, rows_sent: int) -> str | None:
    """Why a `/iris/classify_batch` answer is wrong, or None when it is right."""
    if not isinstance(body, dict):
        return f"answer is not an object: {body!r}"
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != rows_sent:
        count = len(predictions) if isinstance(predictions, list) else predictions
        return f"{count} predictions for {rows_sent} flowers"
    for index, prediction in enumerate(predictions):
        if problem := _prediction_problem(prediction):
            return f"prediction {index}: {problem}"
    if not body.get("model_version"):
        return "model_version is missing"
    return None


# Flowers whose answers must be the same on every replica, for the whole run, as the answers
# taken before the load: one of each species from the bundled data, one from the border
# between versicolor and virginica (where another model would answer differently first), and
# the API's documented example.
REFERENCE_FLOWERS: tuple[dict[str, float], ...] = (
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 7.0, "sepal_width": 3.2, "petal_length": 4.7, "petal_width": 1.4},
    {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5},
    {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 5.1, "petal_width": 1.6},
    SAMPLE_FLOWER,
)


@dataclass
class ReferenceAnswers:
    """The reference flowers' answers taken before the load, and each replica's under load.

    A check passes only when a replica's answer equals, value for value, the answer taken
    before the load: a replica serving another model, or a wrong result under concurrency,
    is a failure however plausible its answer looks.
    """

    singles: list[Any] | None = None
    batch: Any = None
    checked: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)

    def take(self, singles: list[Any], batch: Any) -> None:
        """Keep the answers taken before the load (one per flower, and one batch of all)."""
        for index, answer in enumerate(singles):
            if problem := classification_problem(answer):
                raise ValueError(f"reference flower {index}: {problem}")
        if problem := batch_problem(batch, len(REFERENCE_FLOWERS)):
            raise ValueError(f"reference batch: {problem}")
        self.reset()
        self.singles, self.batch = singles, batch

    def reset(self) -> None:
        self.singles = self.batch = None
        self.checked.clear()
        self.wrong.clear()

    def single_problem(self, index: int, answer: Any, served_by: str) -> str | None:
        """Why `answer` to REFERENCE_FLOWERS[index] is wrong, or None when it is the same."""
        expected = self.singles[index] if self.singles is not None else None
        return self._compare(f"reference flower {index}", expected, answer, served_by)

    def batch_problem(self, answer: Any, served_by: str) -> str | None:
        """Why `answer` to the batch of all REFERENCE_FLOWERS is wrong, or None."""
        return self._compare("reference batch", self.batch, answer, served_by)

    def _compare(self, what: str, expected: Any, answer: Any, served_by: str) -> str | None:
        replica = served_by or "unnamed replica"
        if expected is None:
            problem = "no reference answers were taken before the load"
        elif answer != expected:
            problem = f"{what}: {replica} answered {answer!r}, before the load {expected!r}"
        else:
            self.checked[replica] += 1
            return None
        self.wrong.append(problem)
        return problem

    def gate(self, served: Mapping[str, int]) -> GateResult:
        """Pass when no answer differed and every replica that served was checked."""
        name = "reference answers"
        if self.singles is None:
            return GateResult(name, False, "no reference answers were taken before the load")
        if self.wrong:
            return GateResult(name, False, f"{len(self.wrong)} differed; first: {self.wrong[0]}")
        unchecked = sorted(set(served) - set(self.checked))
        if unchecked:
            return GateResult(name, False, f"never checked on {', '.join(unchecked)}")
        tally = ", ".join(f"{replica}: {count}" for replica, count in sorted(self.checked.items()))
        return GateResult(name, True, f"identical to those before the load ({tally})")
