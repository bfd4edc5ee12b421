"""Keeps BentoML's interactive API page offline and serves the corrected OpenAPI document.

BentoML's page at `/` embeds Google Tag Manager: a Content-Security-Policy keeps the page to
the service's own origin, so it works offline and tells no third party that it was opened.
"""

from __future__ import annotations

import json

from iris_classifier.http import ASGIApp, Message, Receive, Scope, Send, rewriting_body
from iris_classifier.serving.openapi import describe_service

CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
)


class ApiPageMiddleware:
    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.version = version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            if scope["path"] == "/":
                send = _with_policy(send)
            elif scope["path"] == "/docs.json":
                send = rewriting_body(send, 200, self._corrected_document)
        await self.app(scope, receive, send)

    def _corrected_document(self, body: bytes) -> bytes:
        return json.dumps(describe_service(json.loads(body), self.version)).encode()


def _with_policy(send: Send) -> Send:
    async def send_with_policy(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", ()),
                (b"content-security-policy", CONTENT_SECURITY_POLICY),
            ]
        await send(message)

    return send_with_policy
