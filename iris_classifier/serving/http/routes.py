"""The one route table: the seed routes, the model card, the API page and its document, and
every Open Inference Protocol route, answered at one depth of the ASGI stack: inside BentoML's
metrics and tracing layers and the request timeout, but before BentoML's router, whose
per-request API machinery costs more CPU than a prediction. BentoML's `/livez`, `/healthz`,
`/readyz`, `/metrics` and `/schema.json` pass through to it; any other path is a 404 and a
known path asked with another method a 405, in the one error shape (errors.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from iris_classifier.flowers import MODEL_NAME
from iris_classifier.serving.http.errors import (
    ErrorAnswer,
    send_body,
    send_error_answer,
    validation_refusal,
)
from iris_classifier.serving.http.limits import (
    HEADER_LENGTH,
    TENSOR_TYPES,
    BodyRefused,
    read_body,
    refuse_unread,
)
from iris_classifier.serving.http.request_context import MAX_PATH_CHARS, clip
from iris_classifier.serving.http.shutdown import Drain
from iris_classifier.serving.http.tokens import BearerTokens
from iris_classifier.serving.pages.api_page import CONTENT_SECURITY_POLICY, render_page
from iris_classifier.serving.protocols.contract import parse_batch, parse_flower
from iris_classifier.serving.seam import BENTOML_PATHS

# The model's side (NumPy, the predictor, the tensor protocol) reaches the table with the loaded
# model, in a worker: BentoML's arbiter builds the table too, and never predicts.
if TYPE_CHECKING:
    from iris_classifier.serving.model.prediction import Predictor
    from iris_classifier.serving.protocols.v2 import InferenceProtocol

logger = logging.getLogger("iris_classifier.http")

V2_MODELS = "/v2/models/"
# The routes that predict or describe the model by the tensor protocol take a bearer token when
# tokens are configured. Health, readiness, /metrics, the API page and its document stay open:
# probes and Prometheus cannot easily carry a token (iris_classifier/serving/README.md).
TOKEN_ROUTES = frozenset({"/iris/classify_iris", "/iris/classify_batch"})
LIVE = orjson.dumps({"live": True})
READY = orjson.dumps({"ready": True})
NOT_READY = orjson.dumps({"ready": False})
TENSOR_HEADER_LENGTH = HEADER_LENGTH.encode()

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServedModel:
    """What one loaded model answers with: the predictor every front end calls, the tensor
    protocol over it, and the card clients are shown."""

    predictor: Predictor
    protocol: InferenceProtocol
    card: Mapping[str, Any]


class RouteTable:
    """Built by the service with the drain and settings; `serve` hands it the loaded model."""

    def __init__(
        self,
        *,
        drain: Drain,
        version: str,
        max_body_bytes: int,
        openapi: Callable[[], dict],
        tokens: BearerTokens | None = None,
    ) -> None:
        self.drain, self.version, self.max_body_bytes = drain, version, max_body_bytes
        self.tokens = tokens
        self.openapi = openapi  # BentoML's generated document, corrected by openapi.py
        self.served: ServedModel | None = None
        self.routes: dict[str, dict[str, Handler]] = {
            "/": {"GET": self.api_page},
            "/docs.json": {"GET": _answer(lambda: json.dumps(self.describe()).encode())},
            "/healthcheck": {"GET": _answer(lambda: b'"Iris classifier is ready!"')},
            "/iris/model": {"GET": _answer(lambda: orjson.dumps(dict(self._loaded().card)))},
            "/iris/classify_iris": {"POST": self.classify_iris},
            "/iris/classify_batch": {"POST": self.classify_batch},
            "/v2": {"GET": _answer(lambda: self._loaded().protocol.server_metadata())},
            "/v2/health/live": {"GET": _answer(lambda: LIVE)},
            "/v2/health/ready": {"GET": self.ready},
        }
        self.model_routes: dict[str, dict[str, Handler]] = {}
        # Both tables in one, for one look-up per request whichever table holds the path.
        self._paths = dict(self.routes)

    def serve(self, served: ServedModel) -> None:
        """Answer with `served` from now on; its V2 routes become exact paths of the table."""
        self.served = served
        metadata = _answer(served.protocol.model_metadata)
        model = f"{V2_MODELS}{MODEL_NAME}"
        self.model_routes = {
            path: methods
            for prefix in (model, f"{model}/versions/{served.protocol.model_version}")
            for path, methods in (
                (prefix, {"GET": metadata}),
                (f"{prefix}/ready", {"GET": self.ready}),
                (f"{prefix}/infer", {"POST": self.infer}),
            )
        }
        self._paths = {**self.model_routes, **self.routes}

    def routes_path(self, path: str) -> bool:
        """Whether `path` is one of the service's routes (the model's once it is served), or one
        of BentoML's that the table passes on: anything else is a 404."""
        return path in self._paths or path in BENTOML_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        path = scope["path"]
        methods = self._paths.get(path)
        if methods is None and path.startswith(V2_MODELS):
            methods = self._unknown_model(path)
        if methods is None and path in BENTOML_PATHS:
            await app(scope, receive, send)
            return
        method = scope["method"]
        try:
            if self.tokens is not None and (path in TOKEN_ROUTES or path.startswith(V2_MODELS)):
                self.tokens.check(scope)
            if methods is None:
                raise ErrorAnswer(404, f"no route {clip(path, MAX_PATH_CHARS)!r}", field="path")
            handler = methods.get("GET" if method == "HEAD" else method)
            if handler is None:
                allowed = ", ".join(sorted({*methods, *(("HEAD",) if "GET" in methods else ())}))
                raise ErrorAnswer(
                    405,
                    f"method {method[:16]} is not allowed on {clip(path, MAX_PATH_CHARS)!r}: use {allowed}",
                    field="method",
                    headers=((b"allow", allowed.encode()),),
                )
            await handler(scope, receive, _without_body(send) if method == "HEAD" else send)
        except ErrorAnswer as refusal:
            logger.warning("refused %s %s: %d %s", method, path, refusal.status, refusal.error)
            if isinstance(refusal, BodyRefused):
                await refuse_unread(scope, receive, send, refusal)
            else:
                await send_error_answer(send, refusal)

    def _loaded(self) -> ServedModel:
        if self.served is None:
            raise ErrorAnswer(503, "the model is not loaded yet", field="model")
        return self.served

    async def classify_iris(self, scope: Scope, receive: Receive, send: Send) -> None:
        predictor = self._loaded().predictor
        body = await read_body(scope, receive, self.max_body_bytes)
        if body is not None:
            await send_body(send, 200, orjson.dumps(predictor.classify(_read(parse_flower, body))))

    async def classify_batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        predictor = self._loaded().predictor
        body = await read_body(scope, receive, self.max_body_bytes)
        if body is not None:
            answer = predictor.classify_many(_read(parse_batch, body))
            await send_body(send, 200, orjson.dumps(answer))

    def describe(self) -> dict[str, Any]:
        from iris_classifier.serving.pages.openapi import describe_service  # it names the tensors

        return describe_service(
            self.openapi(), self.version, self.served.card if self.served else {}
        )

    async def api_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        page = render_page(self.describe(), self.served.card if self.served else {}).encode()
        csp = ((b"content-security-policy", CONTENT_SECURITY_POLICY),)
        await send_body(send, 200, page, b"text/html; charset=utf-8", headers=csp)

    async def ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Not ready once the drain has begun, as /readyz says.
        ready = self.served is not None and not self.drain.active
        await send_body(send, 200 if ready else 503, READY if ready else NOT_READY)

    async def infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        protocol = self._loaded().protocol
        body = await read_body(scope, receive, self.max_body_bytes, TENSOR_TYPES)
        if body is None:
            return
        header_length = None
        for name, value in scope["headers"]:
            if name == TENSOR_HEADER_LENGTH:
                header_length = value  # the last one, as a dict of the headers would hold
        answer = protocol.infer(body, header_length and header_length.decode("latin-1"))
        await send_body(send, 200, answer.body, answer.media_type, headers=answer.headers)

    def _unknown_model(self, path: str) -> dict[str, Handler] | None:
        """A V2 model route naming another model or version: its methods answer the 404 that
        says which model this server has (503 before it has one)."""
        model, *rest = path[len(V2_MODELS) :].split("/")
        version = rest[1] if rest[:1] == ["versions"] and len(rest) >= 2 else None
        rest = rest[2:] if version is not None else rest
        if not model or rest not in ([], ["ready"], ["infer"]):
            return None

        async def unknown(scope: Scope, receive: Receive, send: Send) -> None:
            self._loaded().protocol.check_model(model, version)
            raise ErrorAnswer(404, f"no route {clip(path, MAX_PATH_CHARS)!r}", field="path")

        return {"POST" if rest == ["infer"] else "GET": unknown}


def _read(parse: Callable[[bytes], Any], body: bytes) -> Any:
    """A seed body read by the contract's `parse`, or its 400."""
    try:
        # An empty body is read as {}, as BentoML read it.
        return parse(body or b"{}")
    except ValidationError as error:
        raise validation_refusal(error) from None


def _answer(body: Callable[[], bytes]) -> Handler:
    """A GET route answering the JSON `body()` gives."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        await send_body(send, 200, body())

    return handler


def _without_body(send: Send) -> Send:
    async def head(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return head


class RouteMiddleware:
    """The route table as a service middleware: `IrisClassifier.add_asgi_middleware(
    RouteMiddleware, table=...)`; the rest of BentoML's app sits behind it."""

    def __init__(self, app: ASGIApp, table: RouteTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.table(scope, receive, send, self.app)
