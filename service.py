"""The iris classifier as a BentoML service.

    bentoml serve service:IrisClassifier --port 3000

`POST /iris/classify_iris` and `GET /healthcheck` keep the contract of the FastAPI service this
project replaces; `POST /iris/classify_batch` answers many flowers in one request.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from iris_classifier.serving import card
from iris_classifier.serving.api_page import ApiPageMiddleware
from iris_classifier.serving.config import FEATURE_NAMES, MODEL_NAME, Settings
from iris_classifier.serving.contract import (
    BatchClassification,
    BatchRequest,
    Classification,
    IrisFeatures,
)
from iris_classifier.serving.edge import EdgeMiddleware
from iris_classifier.serving.limits import RequestLimitsMiddleware
from iris_classifier.serving.logs import configure_logging
from iris_classifier.serving.metrics import ModelMetrics
from iris_classifier.serving.model import ModelError, OnnxClassifier
from iris_classifier.serving.model import load as load_model
from iris_classifier.serving.prediction import (
    PredictionRoutes,
    Predictor,
    features_of,
    read_flower,
)
from iris_classifier.serving.ranges import TrainingRanges
from iris_classifier.serving.shutdown import Drain
from iris_classifier.serving.v2 import InferenceProtocol
from iris_classifier.serving.v2_http import endpoints as v2_endpoints

settings = Settings.from_env()
configure_logging(settings.log_format, settings.served_by)

# The seed service answered GET /healthcheck; clients and probes written for it keep working.
# GET /iris/model tells clients which estimator answers them and how well it scored.
legacy = Starlette(
    routes=[
        Route("/healthcheck", lambda _: JSONResponse("Iris classifier is ready!")),
        Route("/iris/model", lambda _: JSONResponse(card.published())),
        # The Open Inference Protocol (KServe V2): /v2, its health, metadata and infer routes.
        *v2_endpoints.routes(),
    ]
)
STORED_MODEL = bentoml.models.BentoModel(f"{MODEL_NAME}:latest")


def load_stored(model_ref: Any) -> tuple[OnnxClassifier, TrainingRanges, dict[str, Any]]:
    """The checked ONNX classifier of the stored model, the training ranges every answer's
    out_of_range is judged against, and the card clients are shown."""
    model = model_ref.resolve() if hasattr(model_ref, "resolve") else model_ref
    try:
        classifier = load_model(Path(model.path), model.info.metadata, FEATURE_NAMES)
        ranges = TrainingRanges.from_metadata(
            model.info.metadata.get("feature_stats"), FEATURE_NAMES
        )
    except ModelError as exc:
        # One line and exit status 1: `bentoml serve` (and so the container) stops at once
        # rather than restarting a worker that can never become ready.
        raise SystemExit(f"refusing to serve {model.tag}: {exc}") from None
    return classifier, ranges, card.model_card(str(model.tag), model.info.metadata)


# Checked here, on import, because `bentoml serve` imports the service before it starts any
# worker: a bad model stops the server with a clear line, not a worker restart loop.
load_stored(STORED_MODEL)


# BentoML opens OpenTelemetry spans for every request even when no exporter is configured, at a
# large share of a prediction's CPU (benchmarks/README.md). Other routes keep their traces.
UNTRACED_ROUTES = ["/iris/classify_iris", "/iris/classify_batch", "/v2/models/"]


@bentoml.asgi_app(legacy, path="/")
@bentoml.service(
    traffic={"timeout": 10},
    tracing={"excluded_urls": UNTRACED_ROUTES},
    # EdgeMiddleware writes one access line per request, with its request id.
    logging={"access": {"enabled": False}},
    labels={"project": "iris-classifier"},
)
class IrisClassifier:
    model_ref = STORED_MODEL

    def __init__(self) -> None:
        self.model, self.ranges, model_card = load_stored(self.model_ref)
        self.model_version = model_card["model_version"]
        card.publish(model_card)
        v2_endpoints.attach(
            InferenceProtocol(
                self.model,
                model_version=self.model_version.split(":", 1)[-1],
                server_version=settings.version,
                parameters={
                    key: model_card[key]
                    for key in ("class_names", "feature_names", "feature_unit", "estimator")
                    if key in model_card
                },
            )
        )
        self.predictor = Predictor(
            self.model,
            self.ranges,
            ModelMetrics(
                self.model.class_names,
                FEATURE_NAMES,
                model_version=self.model_version,
                estimator=str(model_card.get("estimator", "unknown")),
            ),
            self.model_version,
        )
        PredictionRoutes.attach(self.predictor)
        # Everything loaded so far lives as long as the process: frozen, the garbage collector
        # stops re-walking it in every full collection, the tail of the latency distribution.
        gc.freeze()
        # A request's objects die by reference counting; frequent collections mostly re-walked
        # the objects of requests still in flight. Rarer ones still collect cycles.
        gc.set_threshold(50_000, 10, 10)

    # Over HTTP these two routes are answered by PredictionRoutes with the same Predictor;
    # the typed APIs declare them (OpenAPI document, BentoML clients) and serve Python callers.
    @bentoml.api(route="/iris/classify_iris")
    async def classify_iris(self, flower: IrisFeatures, /) -> Classification:
        """Classify one flower: the most likely species and its probability."""
        return Classification.model_validate(self.predictor.classify(read_flower(flower)))

    @bentoml.api(route="/iris/classify_batch")
    async def classify_batch(self, batch: BatchRequest, /) -> BatchClassification:
        """Classify up to 5,000 flowers in one request; answers come in the order sent."""
        features = features_of(batch.flowers, read_flower)
        return BatchClassification.model_validate(self.predictor.classify_many(features))


drain = Drain(settings.drain_seconds)
# The V2 readiness route says what /readyz says: not ready once the drain has begun.
v2_endpoints.stopping = lambda: drain.active
IrisClassifier.add_asgi_middleware(EdgeMiddleware, served_by=settings.served_by, drain=drain)
IrisClassifier.add_asgi_middleware(
    ApiPageMiddleware, service=IrisClassifier, version=settings.version
)
IrisClassifier.add_asgi_middleware(RequestLimitsMiddleware, max_bytes=settings.max_body_bytes)
IrisClassifier.add_asgi_middleware(PredictionRoutes)
