"""The iris classifier as a BentoML service.

    bentoml serve service:IrisClassifier --port 3000

`POST /iris/classify_iris` and `GET /healthcheck` keep the contract of the FastAPI service this
project replaces; `POST /iris/classify_batch` answers many flowers in one request, and the Open
Inference Protocol (KServe V2) routes answer the same model as tensors.

Everything is built here and handed to what needs it: the settings, the drain, the route table
(iris_classifier/serving/http/routes.py) and, once a worker has loaded the model, the one Predictor
that every route calls.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bentoml

from iris_classifier.flowers import FEATURE_NAMES
from iris_classifier.model_format import ModelError, version_of
from iris_classifier.serving import seam
from iris_classifier.serving.config import Settings
from iris_classifier.serving.http.edge import add_edge
from iris_classifier.serving.http.recycling import ConnectionRecycler
from iris_classifier.serving.http.routes import RouteMiddleware, RouteTable, ServedModel
from iris_classifier.serving.http.shutdown import Drain
from iris_classifier.serving.http.slow_clients import ClientLimits, ConnectionGuard, SlowClients
from iris_classifier.serving.http.tokens import BearerTokens, TokenFileError
from iris_classifier.serving.model import card
from iris_classifier.serving.telemetry.logs import configure_logging
from iris_classifier.serving.telemetry.metric_buffer import shared_buffer

# What only a worker needs (the model, NumPy, ONNX Runtime) is imported where a worker loads
# the model: the arbiter imports this module too, and would hold all of it for nothing.

settings = Settings.from_env()
configure_logging(settings.log_format, settings.served_by, settings.log_flush_seconds)
# At class scope below, so `bentoml build` packs this version (IRIS_MODEL, else the latest)
# and the image serves it: settings.model_tag is the packed version there.
STORED_MODEL = bentoml.models.BentoModel(settings.model_tag)
# Shown with the model card in the tensor protocol's model metadata.
V2_PARAMETERS = ("class_names", "feature_names", "feature_unit", "estimator")


def refuse_to_serve(model: Any, problem: object) -> SystemExit:
    # One line and exit status 1: `bentoml serve` (and so the container) stops at once rather
    # than restarting a worker that can never become ready.
    return SystemExit(f"refusing to serve {model.tag}: {problem}")


def check_stored(model_ref: Any) -> None:
    """Check the stored model as a worker will load it, without loading it here.

    `bentoml serve` imports this module in its main process (the arbiter) before it starts any
    worker, so a bad model stops the server with a clear line, not a worker restart loop. The
    arbiter never predicts: the servable-model check a worker runs as it loads the model runs
    here in a short-lived child process, so the arbiter holds neither ONNX Runtime and a session
    nor NumPy for its whole life.
    """
    model = seam.stored_model(model_ref)
    checked = subprocess.run(
        [sys.executable, "-c", "from iris_classifier.servable import check; check()"],
        input=json.dumps({"directory": model.path, "metadata": model.info.metadata}, default=str),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)},
        check=False,
    )
    if checked.returncode != 0:
        lines = checked.stderr.strip().splitlines() or ["the check died silently"]
        raise refuse_to_serve(model, lines[-1])


def load_served(model_ref: Any) -> ServedModel:
    """The loaded model: its one Predictor, the tensor protocol over it, and its card."""
    from iris_classifier.servable import servable_model
    from iris_classifier.serving.model.drift import DriftCounts
    from iris_classifier.serving.model.prediction import Predictor
    from iris_classifier.serving.model.prediction_log import PredictionLog
    from iris_classifier.serving.protocols.v2 import InferenceProtocol
    from iris_classifier.serving.telemetry.metrics import ModelMetrics

    model = seam.stored_model(model_ref)
    metadata = model.info.metadata
    try:
        servable = servable_model(Path(model.path), metadata)
    except ModelError as exc:
        raise refuse_to_serve(model, exc) from None
    model_tag = str(model.tag)
    model_card = card.model_card(model_tag, metadata)
    predictor = Predictor(
        servable.classifier,
        servable.ranges,
        ModelMetrics(
            servable.classifier.class_names,
            FEATURE_NAMES,
            model_tag=model_tag,
            estimator=str(model_card.get("estimator", "unknown")),
        ),
        model_tag,
        drift=DriftCounts(servable.drift_bins, model_tag=model_tag),
        prediction_log=PredictionLog(
            settings.prediction_log_rate,
            settings.prediction_log_max_rows,
            servable.classifier.class_names,
            model_tag,
        )
        if settings.prediction_log_rate > 0
        else None,
    )
    protocol = InferenceProtocol(
        predictor,
        model_version=version_of(model_tag),
        server_version=settings.version,
        parameters={key: model_card[key] for key in V2_PARAMETERS if key in model_card},
    )
    return ServedModel(predictor, protocol, model_card)


# A worker checks the model as it loads it, in __init__. The arbiter, which counts GPUs as it
# starts the workers, imports pynvml for that only where NVML can be loaded: elsewhere the
# answer is no GPU either way, and pynvml would stay in the arbiter for its whole life.
if not seam.in_worker():
    check_stored(STORED_MODEL)
    seam.count_gpus_without_pynvml_where_nvml_is_missing()

# BentoML opens OpenTelemetry spans for every request even when no exporter is configured, at a
# large share of a prediction's CPU (benchmarks/README.md). Other routes keep their traces.
UNTRACED_ROUTES = ["/iris/classify_iris", "/iris/classify_batch", "/v2/"]


@bentoml.service(
    traffic={"timeout": 10},
    tracing={"excluded_urls": UNTRACED_ROUTES},
    # The edge (edge.py) writes one access line per request, with its request id.
    logging={"access": {"enabled": False}},
    labels={"project": "iris-classifier"},
)
class IrisClassifier:
    model_ref = STORED_MODEL

    def __init__(self) -> None:
        served = load_served(self.model_ref)
        self.predictor = served.predictor
        self.model_version = served.protocol.model_version
        routes.serve(served)
        # The metrics count in memory from here on; a thread writes them for scrapes.
        shared_buffer().start()
        # Everything loaded so far lives as long as the process: frozen, the garbage collector
        # stops re-walking it in every full collection, the tail of the latency distribution.
        gc.freeze()
        # A request's objects die by reference counting; frequent collections mostly re-walked
        # the objects of requests still in flight. Rarer ones still collect cycles.
        gc.set_threshold(50_000, 10, 10)

    @bentoml.on_shutdown
    def write_metrics(self) -> None:
        """The worker's last counts, written before it exits, once its last request is answered."""
        shared_buffer().stop()


def bearer_tokens() -> BearerTokens | None:
    if settings.token_file is None:
        return None
    try:
        return BearerTokens(settings.token_file)
    except TokenFileError as error:
        # One line and exit status 1, before any worker starts: a server that was told to
        # require tokens never serves without them.
        raise SystemExit(f"IRIS_TOKEN_FILE: {error}") from None


drain = Drain(settings.drain_seconds)
routes = RouteTable(
    tokens=bearer_tokens(),
    drain=drain,
    version=settings.version,
    max_body_bytes=settings.max_body_bytes,
    openapi=lambda: seam.openapi_document(IrisClassifier),
)
add_edge(
    IrisClassifier,
    served_by=settings.served_by,
    drain=drain,
    recycler=ConnectionRecycler(settings.connection_max_requests, settings.connection_max_seconds),
    metric_buffer=shared_buffer(),
    untraced=UNTRACED_ROUTES,
    routed=routes.routes_path,
)
client_limits = ClientLimits(
    max_connections=settings.max_connections,
    head_seconds=settings.head_timeout_seconds,
    body_min_rate=settings.body_min_bytes_per_second,
)
# Inside the edge layers, so a slow body's 408 carries its headers and access line.
IrisClassifier.add_asgi_middleware(
    SlowClients, guard=ConnectionGuard(client_limits, served_by=settings.served_by)
)
IrisClassifier.add_asgi_middleware(RouteMiddleware, table=routes)
# Each answer's head and body in one system call (serving/joined_writes.py says how), set
# where uvicorn serves: the arbiter never imports uvicorn (serving/seam.py). The worker also
# puts off BentoML's proxy app module and the pyparsing it imports: this service forwards
# nowhere (aiohttp stays: BentoML's worker makes a client of the service at start); and
# BentoML's supervisor with the circus, pyzmq and tornado it imports: only the arbiter
# supervises.
if seam.in_worker():
    seam.join_response_writes()
    seam.defer_proxy_module()
    seam.defer_supervisor_module()
