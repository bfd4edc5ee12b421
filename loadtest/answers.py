"""What a correct answer looks like, so that a fast wrong answer counts as a failure.

Every answer must be consistent in itself: a known class that is the arg-max of the
probabilities, its `probability` the same figure rounded to 2 places, probabilities summing to 1
within what rounding to 4 places can lose. The answers for a fixed set of flowers must moreover
be those written in `reference_answers.json`, computed offline from the model `train.py` stores
by default: a replica serving another model, or a wrong result under load, fails the run.

    python -m loadtest.answers           # compare the file with the store's latest model
    python -m loadtest.answers --write   # rewrite the file from it (after `make train`)
    python -m loadtest.answers --url http://127.0.0.1:3000   # ask a running replica instead

With `--url` the replica answers every reference flower, one request each and once more as a
batch; the exit status is 1 if any answer is not the file's (a canary's acceptance check).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import cli
from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES, MODEL_NAME
from loadtest.gates import GateResult

logger = logging.getLogger(__name__)

REFERENCE_ANSWERS_FILE = Path(__file__).with_name("reference_answers.json")
# The service rounds each class's probability to 4 places and the predicted one to 2.
PROBABILITIES_PLACES = 4
PROBABILITY_PLACES = 2
# Rounding to 4 places moves each of the probabilities by at most half a unit.
PROBABILITY_SUM_TOLERANCE = len(CLASS_NAMES) * 0.5 * 10**-PROBABILITIES_PLACES + 1e-9
# How far a correct model's probabilities may be from the file's, on any CPU, before either is
# rounded: the ONNX parity gate's bound between ONNX Runtime and scikit-learn (train.py refuses a
# model beyond it). The default model's scikit-learn answers do not depend on the CPU: its
# solver runs to the optimum (estimators.py).
MODEL_TOLERANCE = 1e-5
FILE_PLACES = 6
# How far apart two figures written to FILE_PLACES can be when MODEL_TOLERANCE apart before.
FILE_TOLERANCE = MODEL_TOLERANCE + 10**-FILE_PLACES
# The predicted class's probability is the top of len(CLASS_NAMES): never below an even split.
MIN_TOP_PROBABILITY = round(1 / len(CLASS_NAMES), PROBABILITY_PLACES)


def _half_unit(places: int) -> float:
    return 0.5 * 10**-places


def _prediction_problem(prediction: Any) -> str | None:
    if not isinstance(prediction, dict):
        return f"prediction is not an object: {prediction!r}"
    species = prediction.get("class")
    if species not in CLASS_NAMES:
        return f"unknown class {species!r}"
    probability = prediction.get("probability")
    if not isinstance(probability, int | float) or not MIN_TOP_PROBABILITY <= probability <= 1.0:
        return f"probability {probability!r} of the predicted class is not in [1/3, 1]"
    return None


def classification_problem(body: Any) -> str | None:
    """Why a `/iris/classify_iris` answer is wrong in itself, or None when it is consistent."""
    if problem := _prediction_problem(body):
        return problem
    probabilities = body.get("probabilities")
    if not isinstance(probabilities, dict) or set(probabilities) != set(CLASS_NAMES):
        return f"probabilities {probabilities!r} do not cover {CLASS_NAMES}"
    if not all(
        isinstance(value, int | float) and 0 <= value <= 1 for value in probabilities.values()
    ):
        return f"probabilities {probabilities!r} are not all in [0, 1]"
    total = sum(probabilities.values())
    if not math.isclose(total, 1.0, abs_tol=PROBABILITY_SUM_TOLERANCE):
        return f"probabilities sum to {total}, not 1 within {PROBABILITY_SUM_TOLERANCE:.5f}"
    species, probability = body["class"], body["probability"]
    if probabilities[species] < max(probabilities.values()):
        return f"class {species!r} is not the most probable in {probabilities}"
    # `probability` is rounded from the unrounded figure, `probabilities` to 4 places from it.
    if abs(probability - probabilities[species]) > _half_unit(PROBABILITY_PLACES) + _half_unit(
        PROBABILITIES_PLACES
    ):
        return f"probability {probability} is not probabilities[{species!r}] rounded"
    if not body.get("model_version"):
        return "model_version is missing"
    return None


def batch_problem(body: Any, rows_sent: int) -> str | None:
    """Why a `/iris/classify_batch` answer is wrong in itself, or None when it is consistent."""
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


@dataclass(frozen=True)
class FixedAnswer:
    """One reference flower and its class probabilities as the stored default model gives them."""

    flower: dict[str, float]
    probabilities: dict[str, float]

    @property
    def species(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    def single_problem(self, answer: Mapping[str, Any]) -> str | None:
        """Why a consistent single-flower answer is not this one, or None."""
        if answer["class"] != self.species:
            return f"class {answer['class']!r}, expected {self.species!r}"
        for name, expected in self.probabilities.items():
            if not _within(answer["probabilities"][name], expected, PROBABILITIES_PLACES):
                return (
                    f"probabilities[{name!r}] {answer['probabilities'][name]}, expected {expected}"
                )
        return self.prediction_problem(answer)

    def prediction_problem(self, prediction: Mapping[str, Any]) -> str | None:
        """Why a consistent prediction (class and rounded probability) is not this one, or None."""
        if prediction["class"] != self.species:
            return f"class {prediction['class']!r}, expected {self.species!r}"
        expected = self.probabilities[self.species]
        if not _within(prediction["probability"], expected, PROBABILITY_PLACES):
            return f"probability {prediction['probability']}, expected {expected:.{PROBABILITY_PLACES}f}"
        return None


def _within(served: float, expected: float, places: int) -> bool:
    """Whether `served`, rounded to `places`, can be `expected` rounded by a correct service."""
    return abs(served - expected) <= _half_unit(places) + MODEL_TOLERANCE + _half_unit(FILE_PLACES)


def load_fixed_answers(path: Path | None = None) -> tuple[FixedAnswer, ...]:
    """The reference flowers and their answers, from `path` (reference_answers.json)."""
    path = path or REFERENCE_ANSWERS_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    answers = tuple(
        FixedAnswer(dict(entry["flower"]), dict(entry["probabilities"]))
        for entry in document["flowers"]
    )
    for index, answer in enumerate(answers):
        if tuple(answer.flower) != FEATURE_NAMES or tuple(answer.probabilities) != CLASS_NAMES:
            raise ValueError(f"{path}: flower {index} does not name {FEATURE_NAMES}/{CLASS_NAMES}")
    return answers


@dataclass
class ReferenceAnswers:
    """The reference flowers' fixed answers, and each replica's answers to them under load.

    A check passes only when a replica's answer is consistent and, within rounding, the fixed
    answer: a replica serving another model, or a wrong result under concurrency, is a
    failure however plausible its answer looks.
    """

    fixed: tuple[FixedAnswer, ...]
    checked: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)

    @property
    def flowers(self) -> list[dict[str, float]]:
        return [answer.flower for answer in self.fixed]

    def reset(self) -> None:
        self.checked.clear()
        self.wrong.clear()

    def single_problem(self, index: int, answer: Any, served_by: str) -> str | None:
        """Why `answer` to flower `index` is wrong, or None when it is the fixed one."""
        problem = classification_problem(answer) or self.fixed[index].single_problem(answer)
        return self._count(f"reference flower {index}", problem, served_by)

    def batch_problem(self, answer: Any, served_by: str) -> str | None:
        """Why `answer` to the batch of every reference flower is wrong, or None."""
        problem = batch_problem(answer, len(self.fixed))
        if problem is None:
            for index, (fixed, prediction) in enumerate(
                zip(self.fixed, answer["predictions"], strict=True)
            ):
                if problem := fixed.prediction_problem(prediction):
                    problem = f"row {index}: {problem}"
                    break
        return self._count("reference batch", problem, served_by)

    def _count(self, what: str, problem: str | None, served_by: str) -> str | None:
        replica = served_by or "unnamed replica"
        if problem is None:
            self.checked[replica] += 1
            return None
        problem = f"{what} on {replica}: {problem}"
        self.wrong.append(problem)
        return problem

    def gate(self, served: Mapping[str, int]) -> GateResult:
        """Pass when no answer differed and every replica that served was checked."""
        name = "reference answers"
        if self.wrong:
            return GateResult(name, False, f"{len(self.wrong)} differed; first: {self.wrong[0]}")
        if not self.checked:
            return GateResult(name, False, "no reference answer was checked")
        unchecked = sorted(set(served) - set(self.checked))
        if unchecked:
            return GateResult(name, False, f"never checked on {', '.join(unchecked)}")
        tally = ", ".join(f"{replica}: {count}" for replica, count in sorted(self.checked.items()))
        return GateResult(
            name, True, f"the fixed answers of {REFERENCE_ANSWERS_FILE.name} ({tally})"
        )


# What the file says of the model it was computed from, copied from the store's metadata.
PROVENANCE_KEYS = ("estimator", "seed", "data_sha256")


def stored_model_answers(
    flowers: Sequence[Mapping[str, float]],
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The store's latest model's provenance, and the flowers' probabilities from it, run by
    ONNX Runtime here (not asked of a service)."""
    import bentoml
    import numpy as np

    from iris_classifier.onnx_model import load

    stored = bentoml.models.get(f"{MODEL_NAME}:latest")
    metadata = stored.info.metadata
    classifier = load(Path(stored.path), metadata, FEATURE_NAMES)
    features = np.array([[float(flower[name]) for name in FEATURE_NAMES] for flower in flowers])
    provenance = {key: metadata[key] for key in PROVENANCE_KEYS}
    return provenance, as_written(classifier.predict_proba(features))


def as_written(rows: Iterable[Iterable[float]]) -> list[dict[str, float]]:
    """Each row of class probabilities as the file holds it: by class name, to FILE_PLACES."""
    return [
        {
            name: round(float(value), FILE_PLACES)
            for name, value in zip(CLASS_NAMES, row, strict=True)
        }
        for row in rows
    ]


def differing_answers(
    fixed: Sequence[FixedAnswer], computed: Sequence[Mapping[str, float]]
) -> list[str]:
    """Each flower whose `computed` probabilities, as written to the file, are not its fixed ones
    within FILE_TOLERANCE: two correct runs of one model, on different CPUs, may differ by that."""
    return [
        f"flower {index}: file {answer.probabilities}, stored model {dict(probabilities)}"
        for index, (answer, probabilities) in enumerate(zip(fixed, computed, strict=True))
        if any(
            abs(answer.probabilities[name] - probabilities[name]) > FILE_TOLERANCE
            for name in CLASS_NAMES
        )
    ]


def served_answers_problems(url: str, fixed: Sequence[FixedAnswer]) -> list[str]:
    """Why a running service's answers to the reference flowers are not the fixed ones."""
    import urllib.request

    def answer(route: str, body: object) -> tuple[Any, str]:
        request = urllib.request.Request(
            url.rstrip("/") + route, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT_SECONDS) as response:
            return json.load(response), response.headers.get("X-Served-By", "")

    reference = ReferenceAnswers(fixed)
    for index, flower in enumerate(reference.flowers):
        reference.single_problem(index, *answer("/iris/classify_iris", flower))
    reference.batch_problem(*answer("/iris/classify_batch", {"flowers": reference.flowers}))
    return reference.wrong


# Above the service's own 10 s request timeout.
ANSWER_TIMEOUT_SECONDS = 15


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser("loadtest.answers", "Check or rewrite " + REFERENCE_ANSWERS_FILE.name)
    parser.add_argument(
        "--write", action="store_true", help="rewrite the file from the store's latest model"
    )
    parser.add_argument(
        "--url", help="check the answers of the service at this base URL instead of the store's"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    fixed = load_fixed_answers()
    if args.url:
        wrong = served_answers_problems(args.url, fixed)
        for line in wrong:
            logger.error("%s", line)
        logger.info("%d of %d answers from %s differ", len(wrong), len(fixed) + 1, args.url)
        return 1 if wrong else 0
    provenance, computed = stored_model_answers([answer.flower for answer in fixed])
    if args.write:
        document = json.loads(REFERENCE_ANSWERS_FILE.read_text(encoding="utf-8"))
        document["model"] = provenance
        for entry, probabilities in zip(document["flowers"], computed, strict=True):
            entry["probabilities"] = probabilities
        REFERENCE_ANSWERS_FILE.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        logger.info("Wrote %d answers to %s", len(computed), REFERENCE_ANSWERS_FILE)
        return 0
    differing = differing_answers(fixed, computed)
    written = json.loads(REFERENCE_ANSWERS_FILE.read_text(encoding="utf-8"))["model"]
    if written != provenance:
        differing.append(f"the file is of the model {written}, the store's is {provenance}")
    for line in differing:
        logger.error("%s", line)
    logger.info(
        "%d of %d fixed answers differ from the store's latest model", len(differing), len(fixed)
    )
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
