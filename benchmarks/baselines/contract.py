"""What both baselines share with the BentoML service: its contract, and its refusals.

The request models are the service's own (`iris_classifier.serving.protocols.contract`), so the baselines
validate exactly as strictly as the service does (finite numbers only, no strings, no
unknown fields, at most 5,000 flowers) and refuse bad input as it does, with a 400 whose
`error` names each field and reason. A baseline that validated less would look faster for
the wrong reason.
"""

from __future__ import annotations

import operator
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import bentoml
import joblib
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from iris_classifier.flowers import FEATURE_NAMES
from iris_classifier.serving.protocols.contract import BatchRequest, IrisFeatures

MODEL_TAG = "iris_classifier:latest"
SERVED_BY = os.environ.get("POD_NAME") or socket.gethostname()

__all__ = ["SERVED_BY", "BatchRequest", "IrisFeatures", "create_app", "feature_row"]

_read_features = operator.attrgetter(*FEATURE_NAMES)


def feature_row(flower: IrisFeatures) -> list[float]:
    """The four measurements in the order the model was trained on."""
    return list(_read_features(flower))


class StoredModel(BaseModel):
    """What a baseline needs from the model store: the fitted pipeline and its labels."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: Any
    class_names: list[str]
    version: str


def load_stored_model(tag: str = MODEL_TAG) -> StoredModel:
    ref = bentoml.models.get(tag)
    # The served entry holds ONNX only; train.py keeps the fitted pipeline in an entry beside it.
    pipeline_ref = bentoml.models.get(ref.info.metadata["pipeline_model"])
    return StoredModel(
        pipeline=joblib.load(pipeline_ref.path_of("pipeline.joblib")),
        class_names=list(ref.info.metadata["class_names"]),
        version=ref.tag.version or "",
    )


def add_contract_error_handler(app: FastAPI) -> None:
    """Answer bad input as the service does: 400 and `{"error": ..., "detail": [...]}`."""

    async def invalid_input(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = []
        for problem in exc.errors():
            # FastAPI puts "body" before the field's path; the service names the field only.
            location = [str(part) for part in problem["loc"]]
            field = ".".join(location[1:] if location[:1] == ["body"] else location) or "body"
            detail.append({"field": field, "reason": problem["msg"], "type": problem["type"]})
        summary = "; ".join(f"{item['field']}: {item['reason']}" for item in detail)
        return JSONResponse(
            {"error": f"invalid input: {summary}", "detail": detail}, status_code=400
        )

    app.add_exception_handler(RequestValidationError, invalid_input)


def create_app(title: str) -> tuple[FastAPI, dict[str, StoredModel]]:
    """A FastAPI app that loads the stored model at start-up into the returned dict (key
    "model"), answers bad input as the service does, and has the seed's health routes."""
    loaded: dict[str, StoredModel] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loaded["model"] = load_stored_model()
        yield
        loaded.clear()

    app = FastAPI(title=title, lifespan=lifespan)
    add_contract_error_handler(app)

    @app.get("/healthcheck")
    async def healthcheck() -> str:
        return "Iris classifier is ready!"

    @app.get("/readyz")
    async def readyz() -> str:
        return "ok"

    return app, loaded
