"""The iris classifier as a BentoML service.

    bentoml serve service:IrisClassifier --port 3000

`POST /iris/classify_iris` and `GET /healthcheck` keep the contract of the FastAPI service this
project replaces; `POST /iris/classify_batch` answers many flowers in one request.
"""

from __future__ import annotations

import gc
import itertools
import logging
import operator
from pathlib import Path

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from iris_classifier.api_page import ApiPageMiddleware
from iris_classifier.config import FEATURE_NAMES, MODEL_NAME, Settings
from iris_classifier.contract import (
    BatchClassification,
    BatchRequest,
    Classification,
    IrisFeatures,
)
from iris_classifier.http import (
    ConciseRefusalFilter,
    ErrorFormatMiddleware,
    RequestLimitsMiddleware,
)
from iris_classifier.model import WEIGHTS_FILE, LinearModel
from iris_classifier.serving.edge import EdgeMiddleware
from iris_classifier.serving.logs import configure_logging
from iris_classifier.serving.shutdown import Drain

settings = Settings.from_env()
configure_logging(settings.log_format, settings.served_by)
read_features = operator.attrgetter(*FEATURE_NAMES)

# The seed service answered GET /healthcheck; clients and probes written for it keep working.
legacy = Starlette(
    routes=[Route("/healthcheck", lambda _: JSONResponse("Iris classifier is ready!"))]
)


# BentoML wraps every request in OpenTelemetry spans (five per request) even when no exporter
# is configured; on the prediction routes that was half the CPU a request cost. Other routes,
# and any deployment that configures an exporter, still get their traces.
UNTRACED_ROUTES = ["/iris/classify_iris", "/iris/classify_batch"]


@bentoml.asgi_app(legacy, path="/")
@bentoml.service(
    traffic={"timeout": 10},
    tracing={"excluded_urls": UNTRACED_ROUTES},
    # EdgeMiddleware writes one access line per request, with its request id.
    logging={"access": {"enabled": False}},
    labels={"project": "iris-classifier"},
)
class IrisClassifier:
    model_ref = bentoml.models.BentoModel(f"{MODEL_NAME}:latest")

    def __init__(self) -> None:
        logging.getLogger("bentoml._internal.server.http_app").addFilter(ConciseRefusalFilter())
        model = self.model_ref.resolve() if hasattr(self.model_ref, "resolve") else self.model_ref
        metadata = model.info.metadata
        self.model_version = str(model.tag)
        weights = Path(self.model_ref.path_of(metadata.get("weights_file", WEIGHTS_FILE)))
        if not weights.is_file():
            # Serving never imports scikit-learn (about 190 MB of the image, 125 MB per
            # process), so it needs the plain weights that train.py stores beside the pipeline.
            raise RuntimeError(
                f"{self.model_version} has no {weights.name}: store a model with train.py"
            )
        self.model = LinearModel.load(weights)
        # Everything loaded so far lives as long as the process. Freezing it keeps the garbage
        # collector from re-walking those objects in every full collection; those walks were
        # the tail of the latency distribution (p99 about 9x the p50 before, about 2x after).
        gc.freeze()
        # A request's objects die by reference counting; collecting after every 700 new ones
        # (the default) mostly re-walked the objects of requests still in flight. Every 50,000
        # keeps cycles collected and cut p99 by another third, batch CPU by a sixth.
        gc.set_threshold(50_000, 10, 10)
        if list(metadata.get("feature_names", FEATURE_NAMES)) != list(FEATURE_NAMES):
            raise RuntimeError(
                f"{self.model_version} was trained on features {metadata['feature_names']}, "
                f"this service sends {list(FEATURE_NAMES)}"
            )

    @bentoml.api(route="/iris/classify_iris")
    async def classify_iris(self, flower: IrisFeatures, /) -> Classification:
        """Classify one flower: the most likely species and its probability."""
        probabilities = self.model.predict_proba_one(
            (flower.sepal_length, flower.sepal_width, flower.petal_length, flower.petal_width)
        )
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        return Classification(
            species=self.model.class_names[best],
            # Rounded as the batch path rounds, so both endpoints give the same answer.
            probability=float(np.round(probabilities[best], 2)),
            probabilities={
                name: round(p, 4)
                for name, p in zip(self.model.class_names, probabilities, strict=True)
            },
            model_version=self.model_version,
        )

    @bentoml.api(route="/iris/classify_batch")
    async def classify_batch(self, batch: BatchRequest, /) -> BatchClassification:
        """Classify up to 5,000 flowers in one request; answers come in the order sent."""
        rows = len(batch.flowers)
        # One flat pass in C straight into a float array: a third of nested Python lists' time.
        features = np.fromiter(
            itertools.chain.from_iterable(map(read_features, batch.flowers)),
            dtype=float,
            count=4 * rows,
        ).reshape(rows, 4)
        probabilities = self.model.predict_proba(features)
        best = probabilities.argmax(axis=1)
        names = self.model.class_names
        # NumPy rounds the whole column at once: a third of the time of round() per row.
        rounded = np.round(probabilities[np.arange(rows), best], 2)
        # Built here from known-good values, so not validated again (a tenth of the request).
        return BatchClassification.model_construct(
            predictions=[
                {"class": names[index], "probability": probability}
                for index, probability in zip(best.tolist(), rounded.tolist(), strict=True)
            ],
            model_version=self.model_version,
        )


IrisClassifier.add_asgi_middleware(
    EdgeMiddleware, served_by=settings.served_by, drain=Drain(settings.drain_seconds)
)
IrisClassifier.add_asgi_middleware(ApiPageMiddleware)
IrisClassifier.add_asgi_middleware(ErrorFormatMiddleware)
IrisClassifier.add_asgi_middleware(RequestLimitsMiddleware, max_bytes=settings.max_body_bytes)
