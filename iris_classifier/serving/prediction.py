"""The two prediction routes: one flower (`/iris/classify_iris`) or many (`/iris/classify_batch`).

`Predictor` gives the answers. The service's typed BentoML APIs return them to Python callers
and describe them in the OpenAPI document; over HTTP, `PredictionRoutes` answers these two
routes itself, inside BentoML's metrics and timeout layers but before its router. BentoML's
per-request API machinery (request object, dependency lookups, argument binding, a second
serialisation pass) cost about as much CPU as everything else a single-flower request does.
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, ClassVar

import numpy as np
import orjson
from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send
from typing_extensions import TypedDict

from iris_classifier.serving.config import FEATURE_NAMES
from iris_classifier.serving.contract import BatchRequest, Centimetres, IrisFeatures
from iris_classifier.serving.limits import send_json, send_json_bytes
from iris_classifier.serving.metrics import ModelMetrics
from iris_classifier.serving.model import OnnxClassifier
from iris_classifier.serving.ranges import TrainingRanges
from iris_classifier.serving.refusals import validation_refusal

logger = logging.getLogger("iris_classifier.http")

SINGLE_ROUTE = "/iris/classify_iris"
BATCH_ROUTE = "/iris/classify_batch"

# A batch's rows read as typed dicts that keep unknown fields: a third of the time pydantic
# takes for 1,000 model instances. A batch read this way with no unknown field in any row is
# one the contract accepts, with the same values (a property test holds the two together);
# any other batch is read again by the contract itself, for its exact errors.
FlowerRow = with_config(ConfigDict(extra="allow"))(
    TypedDict("FlowerRow", dict.fromkeys(FEATURE_NAMES, Centimetres))  # type: ignore[misc]
)
FastBatch = with_config(ConfigDict(extra="forbid"))(
    TypedDict(  # type: ignore[misc]
        "FastBatch",
        # The contract's own bounds on the number of flowers.
        {"flowers": Annotated[list[FlowerRow], *BatchRequest.model_fields["flowers"].metadata]},
    )
)
FAST_BATCH = TypeAdapter(FastBatch)
read_row = operator.itemgetter(*FEATURE_NAMES)
read_flower = operator.attrgetter(*FEATURE_NAMES)


def parse_batch(body: bytes) -> np.ndarray:
    """A batch request's flowers as a (rows, 4) float64 array; the contract's error if refused."""
    try:
        rows = FAST_BATCH.validate_json(body)["flowers"]
    except ValidationError:
        rows = None
    if rows is None or any(len(row) != len(FEATURE_NAMES) for row in rows):
        return features_of(BatchRequest.model_validate_json(body).flowers, read_flower)
    return features_of(rows, read_row)


def features_of(flowers: Sequence[Any], read: Callable[[Any], Iterable[float]]) -> np.ndarray:
    # One flat pass in C into a float array. In float64, as sent, so the range check flags
    # exactly what the single-flower path flags; the model converts to its own precision.
    shape = (len(flowers), len(FEATURE_NAMES))
    return np.fromiter(
        itertools.chain.from_iterable(map(read, flowers)), dtype=float, count=shape[0] * shape[1]
    ).reshape(shape)


def parse_flower(body: bytes) -> tuple[float, ...]:
    """One flower's features, in FEATURE_NAMES order; the contract's error if refused."""
    return read_flower(IrisFeatures.model_validate_json(body))


class Predictor:
    """Answers for one flower or many from the stored classifier, with the model's metrics.

    Answers are the JSON objects the contract's Classification and BatchClassification
    describe, built from known-good values and so not validated again.
    """

    def __init__(
        self,
        model: OnnxClassifier,
        ranges: TrainingRanges,
        metrics: ModelMetrics,
        model_version: str,
    ) -> None:
        self.model = model
        self.ranges = ranges
        self.metrics = metrics
        self.model_version = model_version

    def classify(self, values: Sequence[float]) -> dict[str, Any]:
        probabilities = self.model.predict_proba_one(values)
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        outside = self.ranges.outside_one(values)
        self.metrics.record_one(best, probabilities[best], outside)
        return {
            "class": self.model.class_names[best],
            # np.round(p, 2) as the batch path rounds it (same arithmetic, a tenth of the cost),
            # so both routes give the same answer.
            "probability": round(probabilities[best] * 100) / 100,
            "probabilities": {
                name: round(p, 4)
                for name, p in zip(self.model.class_names, probabilities, strict=True)
            },
            "model_version": self.model_version,
            "out_of_range": outside,
        }

    def classify_many(self, features: np.ndarray) -> dict[str, Any]:
        rows = len(features)
        probabilities = self.model.predict_proba(features)
        best = probabilities.argmax(axis=1)
        names = self.model.class_names
        top = probabilities[np.arange(rows), best]
        outside = self.ranges.outside_mask(features)
        self.metrics.record_batch(best, top, outside)
        # In float64, so that a float32 model's 0.99 is written as 0.99, not 0.9900000095367432.
        rounded = np.round(top.astype(float), 2)
        return {
            "predictions": [
                {"class": names[index], "probability": probability, "out_of_range": flagged}
                for index, probability, flagged in zip(
                    best.tolist(), rounded.tolist(), self.ranges.names_per_row(outside), strict=True
                )
            ],
            "model_version": self.model_version,
        }


class PredictionRoutes:
    """ASGI middleware answering POST on the two prediction routes; the rest passes through.

    Requests reach it through the request limits, so a body is JSON (or has no type, which
    BentoML also read as JSON) and within the size limit. An empty body is read as `{}`, as
    BentoML reads it. Until the service attaches its predictor, requests pass through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    # Each route's reading of a request body and its answer to what was read.
    routes: ClassVar[dict[str, tuple[Callable[[bytes], Any], Callable[[Any], dict[str, Any]]]]] = {}

    @classmethod
    def attach(cls, predictor: Predictor) -> None:
        cls.routes = {
            SINGLE_ROUTE: (parse_flower, predictor.classify),
            BATCH_ROUTE: (parse_batch, predictor.classify_many),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        parse, answer = route
        try:
            body = await Request(scope, receive).body()
        except ClientDisconnect:
            return
        try:
            request = parse(body or b"{}")
        except ValidationError as error:
            refusal, summary = validation_refusal(error)
            logger.warning("refused %s %s: 400 %s", scope["method"], scope["path"], summary)
            await send_json(send, 400, refusal)
            return
        await send_json_bytes(send, 200, orjson.dumps(answer(request)))
