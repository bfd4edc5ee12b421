"""Keeps BentoML's interactive API page offline and its OpenAPI document true to this service.

BentoML's page at `/` embeds Google Tag Manager, and the generated service description shows
badges from img.shields.io and others: a Content-Security-Policy keeps the page to the
service's own origin, so it works offline and tells no third party that it was opened.
BentoML's `/docs.json` claims OpenAPI 3.0 but carries JSON Schema 2020-12 bounds
(`exclusiveMinimum: 0`), marks no request body as required, and describes 400 answers with
a string `detail`; the document is corrected to say what the service really does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iris_classifier.serving import card
from iris_classifier.serving.v2_openapi import v2_paths

CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
)

REFUSAL_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {
                    "field": {"type": "string"},
                    "reason": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
EXTRA_REFUSALS = {
    "413": "Request body over the size limit",
    "415": "Request body not sent as application/json",
}


def rewriting_body(send: Send, status: int, rewrite: Callable[[bytes], bytes]) -> Send:
    """A `send` that holds back a response of `status` and sends it with `rewrite(body)`.

    Responses with any other status stream through untouched, so only the answers that are
    rewritten pay for buffering.
    """
    held_start: Message | None = None
    held_body: list[bytes] = []

    async def send_rewritten(message: Message) -> None:
        nonlocal held_start
        if message["type"] == "http.response.start" and message["status"] == status:
            held_start = message
            return
        if held_start is None or message["type"] != "http.response.body":
            await send(message)
            return
        held_body.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = rewrite(b"".join(held_body))
        headers = [(k, v) for k, v in held_start.get("headers", ()) if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held_start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return send_rewritten


class ApiPageMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            if scope["path"] == "/":
                send = _with_policy(send)
            elif scope["path"] == "/docs.json":
                send = rewriting_body(send, 200, _corrected_document)
        await self.app(scope, receive, send)


def _with_policy(send: Send) -> Send:
    async def send_with_policy(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", ()),
                (b"content-security-policy", CONTENT_SECURITY_POLICY),
            ]
        await send(message)

    return send_with_policy


def _corrected_document(body: bytes) -> bytes:
    return json.dumps(describe_service(json.loads(body))).encode()


# The seed's health check is a mounted Starlette route, which BentoML does not document.
HEALTHCHECK_OPERATION = {
    "get": {
        "tags": ["Infrastructure"],
        "description": "Seed-compatible health check: 200 once the service answers.",
        "responses": {
            "200": {
                "description": "Successful Response",
                "content": {
                    "application/json": {
                        "schema": {"type": "string", "example": "Iris classifier is ready!"}
                    }
                },
            }
        },
    }
}


MODEL_OPERATION = {
    "get": {
        "tags": ["Service APIs"],
        "description": "The served model: estimator, hyper-parameters, hold-out and "
        "cross-validation metrics, classes, features, ONNX precision and opset.",
        "responses": {
            "200": {
                "description": "Successful Response",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }
}


def describe_service(document: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document corrected to what this service accepts and answers."""
    _to_openapi_30_bounds(document)
    document.setdefault("paths", {}).setdefault("/healthcheck", HEALTHCHECK_OPERATION)
    document["paths"].setdefault("/iris/model", MODEL_OPERATION)
    served = card.published()
    version = str(served.get("model_version", "")).split(":")[-1]
    for path, operations in v2_paths(version).items():
        document["paths"].setdefault(path, operations)
    if served:
        # The API page shows this description first: which estimator answers, how well it scored.
        info = document.setdefault("info", {})
        info["description"] = f"{card.summary(served)}\n\n{info.get('description') or ''}"
        info["x-model"] = served
    document.setdefault("components", {}).setdefault("schemas", {})["InvalidArgument"] = {
        **REFUSAL_SCHEMA,
        "title": "InvalidArgument",
        "description": "Bad Request",
    }
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" not in operation:
                continue
            operation["requestBody"]["required"] = True
            for status, description in EXTRA_REFUSALS.items():
                operation["responses"][status] = {
                    "description": description,
                    "content": {"application/json": {"schema": REFUSAL_SCHEMA}},
                }
    return document


def _to_openapi_30_bounds(node: Any) -> None:
    """`exclusiveMinimum: 0` (JSON Schema 2020-12) as `minimum: 0, exclusiveMinimum: true`."""
    if isinstance(node, dict):
        for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            value = node.get(flag)
            if isinstance(value, int | float) and not isinstance(value, bool):
                node[bound] = value
                node[flag] = True
        for child in node.values():
            _to_openapi_30_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _to_openapi_30_bounds(child)
