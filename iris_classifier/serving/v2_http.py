"""The Open Inference Protocol's REST routes, on the service's own Starlette app.

Plain Starlette routes rather than BentoML APIs: a tensor request is parsed once, straight
from its bytes, with no second validation layer. The service attaches the protocol when it
has loaded its model; until then the routes answer 503 and readiness is false.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from iris_classifier.serving.v2 import HEADER_LENGTH, InferenceProtocol, ProtocolError

JSON = "application/json"


class V2Endpoints:
    def __init__(self) -> None:
        self.protocol: InferenceProtocol | None = None
        self.stopping: Callable[[], bool] = lambda: False

    def attach(self, protocol: InferenceProtocol) -> None:
        self.protocol = protocol

    def _loaded(self) -> InferenceProtocol:
        if self.protocol is None:
            raise ProtocolError(503, "the model is not loaded yet")
        return self.protocol

    async def server_metadata(self, request: Request) -> Response:
        return Response(self._loaded().server_metadata(), media_type=JSON)

    async def live(self, request: Request) -> Response:
        return Response(status_code=200)

    async def ready(self, request: Request) -> Response:
        ready = self.protocol is not None and not self.stopping()
        return Response(status_code=200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        protocol = self._checked(request)
        return Response(protocol.model_metadata(), media_type=JSON)

    async def model_ready(self, request: Request) -> Response:
        self._checked(request)
        return await self.ready(request)

    async def infer(self, request: Request) -> Response:
        protocol = self._checked(request)
        answer = protocol.infer(await request.body(), request.headers.get(HEADER_LENGTH))
        if answer.header_length is None:
            return Response(answer.body, media_type=JSON)
        return Response(
            answer.body,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(answer.header_length)},
        )

    def _checked(self, request: Request) -> InferenceProtocol:
        protocol = self._loaded()
        params = request.path_params
        protocol.check_model(params["model"], params.get("version"))
        return protocol

    def routes(self) -> list[Route]:
        def guarded(
            handler: Callable[[Request], Awaitable[Response]],
        ) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                try:
                    return await handler(request)
                except ProtocolError as exc:
                    return JSONResponse({"error": exc.message}, status_code=exc.status)

            return endpoint

        model = "/v2/models/{model}"
        versioned = "/v2/models/{model}/versions/{version}"
        return [
            Route("/v2", guarded(self.server_metadata), methods=["GET"]),
            Route("/v2/health/live", guarded(self.live), methods=["GET"]),
            Route("/v2/health/ready", guarded(self.ready), methods=["GET"]),
            *(
                route
                for prefix in (model, versioned)
                for route in (
                    Route(prefix, guarded(self.model_metadata), methods=["GET"]),
                    Route(f"{prefix}/ready", guarded(self.model_ready), methods=["GET"]),
                    Route(f"{prefix}/infer", guarded(self.infer), methods=["POST"]),
                )
            ),
        ]


endpoints = V2Endpoints()
