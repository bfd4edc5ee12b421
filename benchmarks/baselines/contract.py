"""The request and response shapes both baselines share with the BentoML service.

Kept in one place so the baselines validate exactly as strictly as the service does: a
baseline that skipped validation would look faster for the wrong reason.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import bentoml
import joblib
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

MODEL_TAG = "iris_classifier:latest"
MAX_BATCH_ROWS = 5000
SERVED_BY = os.environ.get("POD_NAME") or socket.gethostname()

Centimetres = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


class IrisFeatures(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sepal_length: Centimetres
    sepal_width: Centimetres
    petal_length: Centimetres
    petal_width: Centimetres

    def as_row(self) -> list[float]:
        return [self.sepal_length, self.sepal_width, self.petal_length, self.petal_width]


class IrisBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flowers: Annotated[list[IrisFeatures], Field(min_length=1, max_length=MAX_BATCH_ROWS)]


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
    """Answer bad input with the service's `{"error": ..., "detail": [...]}` body."""

    async def invalid_input(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(err["loc"]), "msg": err["msg"]} for err in exc.errors()]
        return JSONResponse({"error": "invalid input", "detail": detail}, status_code=422)

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
