"""The one place that knows BentoML's, Starlette's, prometheus_client's and uvicorn's insides.

BentoML packs the service, supervises its processes, runs the lifespan and answers `/metrics`;
the route table (routes.py) answers the hot routes before BentoML's router. Where that needs
more than the libraries' public API, it is done here, each part a small function whose
docstring says what it relies on; tests/serving/test_seam.py fails with one line naming the
part an upgrade moved, and tests/serving/test_seam_boundary.py keeps every other module out.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from starlette.types import ASGIApp, Receive, Scope, Send

from iris_classifier.serving.http.joined_writes import HeadHoldingTransport

logger = logging.getLogger("iris_classifier.seam")

# BentoML's own routes, which the route table passes through to BentoML's router.
BENTOML_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics", "/schema.json"})
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"
# The loggers BentoML, uvicorn and circus configure with handlers of their own.
SERVER_LOGGERS = ("bentoml", "uvicorn", "uvicorn.error", "uvicorn.access", "circus")
# uvicorn's own access line. Its HTTP protocols build that line's client address and path for
# every answer, before the logger's level is looked at, whenever this logger or one above it
# has a handler (`Logger.hasHandlers()`, read as each connection opens).
UVICORN_ACCESS_LOGGER = "uvicorn.access"


# --- BentoML: the service, its model and its Bento ---------------------------------------------


def in_worker() -> bool:
    """Whether this process serves requests: BentoML's main process (the arbiter) imports the
    service too, with `bentoml.server_context.worker_index` None."""
    import bentoml

    return bentoml.server_context.worker_index is not None


def stored_model(model_ref: Any) -> Any:
    """The stored model behind a `bentoml.models.BentoModel`: at module scope a reference to
    `resolve()`, inside the service class already the model BentoML resolved."""
    return model_ref.resolve() if hasattr(model_ref, "resolve") else model_ref


def bento_manifest() -> dict | None:
    """bento.yaml of the Bento being served (BentoML's image sets `BENTO_PATH`), if any."""
    path = Path(os.environ.get("BENTO_PATH", "/nonexistent")) / "bento.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def openapi_document(service: Any) -> dict:
    """BentoML's generated OpenAPI document of `service` (its `openapi_spec`), which openapi.py
    corrects and the route table answers at `/docs.json` and renders at `/` in place of
    BentoML's own page."""
    return service.openapi_spec.asdict()


def bentoml_log_handler(handler: logging.Handler) -> bool:
    """Whether `handler` is one BentoML put on the root logger: exactly a `StreamHandler`
    (a subclass, such as a test runner's capture, is someone else's)."""
    return type(handler) is logging.StreamHandler


# --- BentoML's middleware stack, rewritten once at startup ----------------------------------------


def layers(stack: ASGIApp) -> list[Any]:
    """The layers of a Starlette middleware stack, outermost first, each holding the next in
    its `.app` (as Starlette's own middlewares and BentoML's do)."""
    found = [stack]
    while (inner := getattr(found[-1], "app", None)) is not None:
        found.append(inner)
    return found


def find_layer(stack: ASGIApp, kind: type) -> tuple[Any, Any] | None:
    """The first layer of `kind` in `stack` and the layer holding it in its `.app`; None if the
    stack has none below its top."""
    for parent, layer in itertools.pairwise(layers(stack)):
        if isinstance(layer, kind):
            return parent, layer
    return None


def replace_timeout(stack: ASGIApp, make: Callable[[ASGIApp, float], ASGIApp]) -> bool:
    """Put `make(inner, seconds)` where BentoML's timeout layer (`TimeoutMiddleware`, from the
    service's `traffic.timeout`; `.app` and `.timeout`) is in `stack`."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    found = find_layer(stack, TimeoutMiddleware)
    if found is None:
        return False
    parent, layer = found
    parent.app = make(layer.app, layer.timeout)
    return True


def without_server_errors(stack: ASGIApp) -> ASGIApp:
    """`stack` without Starlette's `ServerErrorMiddleware` (`.app`, `.handler`, `.debug`) at its
    top, when it has neither a handler of its own nor debug pages (BentoML's debug mode).

    That layer wraps every answer's `send` to answer a plain-text 500 for an exception before
    raising it on; the edge's `ErrorShape`, in front of it, answers the same 500 in the error
    shape, which is what that plain one was reshaped into.
    """
    from starlette.middleware.errors import ServerErrorMiddleware

    if type(stack) is ServerErrorMiddleware and stack.handler is None and not stack.debug:
        return stack.app
    return stack


class TracingBypass:
    """In the place of BentoML's tracing layer (OpenTelemetry's `OpenTelemetryMiddleware`, with
    `.app`): a request whose path `untraced` matches goes straight to the layer inside.

    The tracing layer builds each request's full URL and searches its excluded list in it
    before it can let an untraced request pass, on every request. A path the same patterns
    match is in that URL too, so no request passed here would have been traced.
    """

    def __init__(self, tracing: ASGIApp, untraced: re.Pattern[str]) -> None:
        self.tracing = tracing
        self.untraced = untraced

    # The tracing layer's own: a rewrite of the stack inside it moves both.
    @property
    def app(self) -> ASGIApp:
        return self.tracing.app  # type: ignore[attr-defined]

    @app.setter
    def app(self, app: ASGIApp) -> None:
        self.tracing.app = app  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.untraced.search(scope["path"]):
            await self.app(scope, receive, send)
        else:
            await self.tracing(scope, receive, send)


def bypass_tracing(stack: ASGIApp, untraced_patterns: list[str]) -> bool:
    """Put a `TracingBypass` where BentoML's tracing layer is in `stack`, for the patterns the
    service handed BentoML as `tracing.excluded_urls`."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    if not untraced_patterns:
        return False
    found = find_layer(stack, OpenTelemetryMiddleware)
    if found is None:
        return False
    parent, layer = found
    parent.app = TracingBypass(layer, re.compile("|".join(untraced_patterns)))
    return True


class StackRewrite:
    """Registered as a service middleware, it rewrites the whole stack when the application is
    first called (the lifespan) and takes itself out of it.

    A service's own middlewares sit inside BentoML's (metrics, tracing, timeout), and only
    Starlette's `middleware_stack`, built before its first call and read on every call, holds
    them all; `scope["app"]` is the Starlette application. The call that rewrites it (the
    lifespan's) goes on through the new stack from its top, which BentoML's layers pass a
    lifespan through, so the layers put in front see the lifespan too.
    """

    def __init__(self, app: ASGIApp, rewrite: Callable[[ASGIApp], ASGIApp]) -> None:
        self.app = app
        self.rewrite = rewrite
        self.done = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        application = scope.get("app")
        stack = getattr(application, "middleware_stack", None)
        if self.done or stack is None:
            if not self.done:
                self.done = True
                logger.warning("no middleware stack to rewrite: BentoML's answers lack headers")
            await self.app(scope, receive, send)
            return
        self.done = True
        for layer in layers(stack):
            if getattr(layer, "app", None) is self:
                layer.app = self.app
        application.middleware_stack = self.rewrite(stack)  # type: ignore[union-attr]
        await application.middleware_stack(scope, receive, send)  # type: ignore[union-attr]


def rewrite_stack_at_startup(service: Any, rewrite: Callable[[ASGIApp], ASGIApp]) -> None:
    """`rewrite(stack)` becomes the service's whole middleware stack when it starts."""
    service.add_asgi_middleware(StackRewrite, rewrite=rewrite)


# --- prometheus_client and BentoML's request metrics -------------------------------------------


class StoredValue(Protocol):
    """What prometheus_client keeps one sample in: `MutexValue`, or `MmapedValue` (one slot of
    the process's memory-mapped file) in multiprocess mode."""

    def get(self) -> float: ...

    def set(self, value: float, timestamp: float | None = None) -> None: ...


def stored_value(child: Any) -> StoredValue:
    """The value behind a Counter's or a Gauge's child (`_value` since prometheus_client 0.4)."""
    return child._value


def histogram_values(child: Any) -> tuple[tuple[float, ...], list[StoredValue], StoredValue]:
    """A Histogram child's upper bounds (`_upper_bounds`, the last +Inf), one value per bucket
    counting the observations that fell in it and no lower one (`_buckets`), and the sum
    (`_sum`). `observe` adds 1 to the first bucket whose bound is >= the value, and the value
    to the sum; the exposition derives the cumulative buckets and `_count` from these."""
    return tuple(child._upper_bounds), child._buckets, child._sum


@dataclass(frozen=True)
class BentoRequestMetrics:
    """BentoML's request metrics layer in a service's stack, and the collectors it made."""

    parent: Any  # the layer whose `.app` it is
    layer: Any
    total: Any  # Counter: endpoint, service_name, service_version, http_response_code, runner_name
    duration: Any  # Histogram: the same labels
    in_progress: Any  # Gauge (livesum): endpoint, service_name, service_version, runner_name
    last_request: Any  # Gauge: service_name, service_version, runner_name
    skip_paths: tuple[str, ...]  # no last-request time for these prefixes


def bentoml_request_metrics(stack: ASGIApp) -> BentoRequestMetrics | None:
    """BentoML's request metrics layer (`RunnerTrafficMetricsMiddleware`, found through each
    layer's `.app`) with its collectors, made as BentoML makes them (`_setup()`, which also adds
    the zero series of each route); None if the stack has no such layer."""
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    found = find_layer(stack, RunnerTrafficMetricsMiddleware)
    if found is None:
        return None
    parent, layer = found
    if not layer._is_setup:
        layer._setup()
    return BentoRequestMetrics(
        parent=parent,
        layer=layer,
        total=layer.metrics_request_total,
        duration=layer.metrics_request_duration,
        in_progress=layer.metrics_request_in_progress,
        last_request=layer.metrics_last_request_timestamp,
        skip_paths=tuple(layer.skip_paths),
    )


# --- uvicorn, under BentoML ------------------------------------------------------------------
# BentoML builds uvicorn's `Config` and `Server` itself and lets a service choose neither its
# HTTP protocol class nor a hook around connections; an ASGI application sees a connection only
# once a request head is whole. Relied on, for both protocols uvicorn may pick (httptools when
# installed, else h11): `Server.startup` runs the lifespan startup before it opens its listeners
# with `loop.create_server(protocol_factory, ...)` on the same loop; both protocols hold the
# request being read or answered in `cycle` (None before the first head, a new object once a
# head is parsed, `response_complete` once answered); an upgrade (a WebSocket) hands the
# connection over with the transport's `set_protocol`; BentoML leaves the HTTP protocol to
# "auto", looked up in `config.HTTP_PROTOCOLS` after the worker imported the service.

ProtocolWrapper = Callable[[asyncio.Protocol], asyncio.Protocol]


def wrap_listeners(loop: asyncio.AbstractEventLoop, wrap: ProtocolWrapper) -> None:
    """Every listener opened on `loop` from now on passes its connections' protocols to `wrap`."""
    create_server = loop.create_server

    async def create_wrapped_server(protocol_factory: Any, *args: Any, **kwargs: Any) -> Any:
        return await create_server(lambda: wrap(protocol_factory()), *args, **kwargs)

    loop.create_server = create_wrapped_server  # type: ignore[method-assign]


def tracks_requests(protocol: asyncio.Protocol) -> bool:
    """Whether `protocol` keeps its request where `current_request` looks."""
    return hasattr(protocol, "cycle")


def current_request(protocol: asyncio.Protocol) -> object | None:
    """The request `protocol` reads or answers; a new object once a head is whole."""
    return protocol.cycle  # type: ignore[attr-defined]


def answering(protocol: asyncio.Protocol) -> bool:
    """Whether a request is being read or answered, so the bytes that come are its body."""
    cycle = protocol.cycle  # type: ignore[attr-defined]
    return cycle is not None and not cycle.response_complete


JOINED_WRITES_PROTOCOL = "iris_classifier.serving.seam:JoinedWritesProtocol"


# uvicorn itself is imported only where the joined writes are installed and their protocol is
# loaded, both in a worker: `bentoml serve`'s arbiter imports the service, and so this module,
# but never serves, and would hold uvicorn and what it imports for nothing.
@functools.cache
def joined_writes_protocol() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class JoinedWritesProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, writing through a `HeadHoldingTransport` (the
        transport it is given in `connection_made`)."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]

    return JoinedWritesProtocol


def __getattr__(name: str) -> Any:
    # uvicorn loads the protocol by its import string (JOINED_WRITES_PROTOCOL).
    if name == "JoinedWritesProtocol":
        return joined_writes_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def join_response_writes() -> None:
    """Make uvicorn's "auto" HTTP protocol `JoinedWritesProtocol` (pyproject.toml pins
    httptools), in the process that serves, before its server loads it."""
    from uvicorn import config

    config.HTTP_PROTOCOLS["auto"] = JOINED_WRITES_PROTOCOL


# --- BentoML: what its worker imports and this service never uses ------------------------------

PROXY_MODULE = "_bentoml_impl.server.proxy"
SUPERVISOR_MODULE = "_bentoml_impl.server.serving"
APP_MODULE = "_bentoml_impl.server.app"


def defer_proxy_module() -> bool:
    """Put off importing BentoML's proxy app until something uses it.

    BentoML's ASGI app module imports `create_proxy_app` from `PROXY_MODULE`, which imports
    aiohttp and pyparsing, only for services that forward to a server of their own (`cmd=`);
    this one never does, and the module's pyparsing would stay in the worker for nothing. In
    the worker, before `to_asgi()` imports the app module, a stand-in takes the module's place:
    calling its `create_proxy_app`, or reading any other name from it, imports the real module.
    False where the app module or the proxy module is already imported: nothing is replaced.
    """
    return put_off(PROXY_MODULE, "create_proxy_app", imported_by=APP_MODULE)


def defer_supervisor_module() -> bool:
    """Put off importing BentoML's supervisor (`serve_http`) until something calls it.

    BentoML's app module is in the package `_bentoml_impl.server`, whose `__init__` imports
    `serve_http` from `SUPERVISOR_MODULE`, the main process's code that starts and watches the
    workers with circus, which imports pyzmq and tornado. A worker never supervises, and would
    hold all of it for nothing. In the worker, before `to_asgi()` imports the app module, a
    stand-in takes the module's place: calling its `serve_http`, or reading any other name from
    it, imports the real module. False where the package or the module is already imported.
    """
    return put_off(SUPERVISOR_MODULE, "serve_http", imported_by="_bentoml_impl.server")


def put_off(module: str, function: str, *, imported_by: str) -> bool:
    """Put a stand-in for `module` in `sys.modules` before `imported_by` imports `function` from
    it; the stand-in imports the real module when `function` is called or any other name but a
    dunder is read. False, and nothing replaced, where either module is already imported."""
    import importlib
    import sys
    import types

    if module in sys.modules or imported_by in sys.modules:
        return False

    def real() -> types.ModuleType:
        if sys.modules.get(module) is stand_in:
            del sys.modules[module]
        return importlib.import_module(module)

    def call_real(*args: Any, **kwargs: Any) -> Any:
        return getattr(real(), function)(*args, **kwargs)

    def module_getattr(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real(), name)

    stand_in = types.ModuleType(module, f"A stand-in for {module} until {function} is called.")
    call_real.__name__ = call_real.__qualname__ = function
    setattr(stand_in, function, call_real)
    stand_in.__getattr__ = module_getattr  # type: ignore[attr-defined]
    sys.modules[module] = stand_in
    return True


# --- BentoML: what its main process imports to count GPUs -------------------------------------

NVML_LIBRARY = "libnvidia-ml.so.1"


def count_gpus_without_pynvml_where_nvml_is_missing() -> bool:
    """Answer BentoML's count of NVIDIA GPUs without pynvml where NVML cannot be loaded.

    BentoML's main process counts the machine's GPUs (`NvidiaGpuResource.from_system`) as it
    starts its workers: it imports pynvml, the whole NVML API in Python that then stays in the
    process, and answers no GPU when pynvml cannot load `NVML_LIBRARY` (`CDLL` on Linux). The
    count here loads that library the same way first and answers no GPU without pynvml if it
    cannot; where it can, BentoML's own count runs. False, and nothing replaced, off Linux or
    where it is already replaced.
    """
    import ctypes
    import sys

    from bentoml._internal.resource import NvidiaGpuResource

    bentoml_count = NvidiaGpuResource.from_system
    if not sys.platform.startswith("linux") or hasattr(bentoml_count, "bentoml_count"):
        return False

    @functools.cache
    def from_system() -> list[int]:
        try:
            ctypes.CDLL(NVML_LIBRARY)
        except OSError:
            return []
        return bentoml_count()

    from_system.bentoml_count = bentoml_count  # type: ignore[attr-defined]
    NvidiaGpuResource.from_system = staticmethod(from_system)  # type: ignore[method-assign]
    return True
