"""What iris_classifier/serving/seam.py relies on in the installed BentoML, Starlette,
prometheus_client and uvicorn is still there: each check fails with one line naming what moved."""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path

import bentoml
import prometheus_client
import pytest
import uvicorn

from iris_classifier.serving import seam
from tests.support.python_report import python_report
from tests.support.raw_http import read_answer, request, uvicorn_serving


@pytest.fixture
def registry() -> prometheus_client.CollectorRegistry:
    return prometheus_client.CollectorRegistry()


def test_a_counter_and_a_gauge_keep_their_value_in_value(registry) -> None:
    counter = prometheus_client.Counter("c", "c", registry=registry)
    gauge = prometheus_client.Gauge("g", "g", registry=registry)
    counter.inc(2)
    gauge.set(5)
    for child, expected in ((counter, 2), (gauge, 5)):
        assert hasattr(child, "_value"), f"prometheus_client {child} has no _value any more"
        value = seam.stored_value(child)
        assert value.get() == expected, "_value.get() no longer reads the child's value"
        value.set(expected + 1)
    assert (counter._value.get(), gauge._value.get()) == (3, 6), "_value.set() does not set"


def test_a_histogram_keeps_bounds_buckets_and_sum(registry) -> None:
    histogram = prometheus_client.Histogram("h", "h", buckets=(1, 2), registry=registry)
    for name in ("_upper_bounds", "_buckets", "_sum"):
        assert hasattr(histogram, name), f"prometheus_client Histogram has no {name} any more"
    histogram.observe(1.5)
    bounds, buckets, total = seam.histogram_values(histogram)
    assert bounds == (1, 2, float("inf")), "_upper_bounds is not the bounds and +Inf"
    assert [bucket.get() for bucket in buckets] == [0, 1, 0], "_buckets are not per bucket"
    assert total.get() == 1.5, "_sum is not the sum"


class Outer:
    """A layer in front of BentoML's, as the layers of a service's stack hold one another."""

    def __init__(self, app) -> None:
        self.app = app


def test_bentoml_request_metrics_layer_is_found_with_the_series_it_makes() -> None:
    """BentoML's layer in a stack of its own (a namespace of its own, so its series stay apart
    from the service's in this process), found, its collectors made, and replaced."""
    from bentoml._internal.server.http import instruments

    from iris_classifier.serving.telemetry.metric_buffer import MetricBuffer
    from iris_classifier.serving.telemetry.request_metrics import (
        RequestMetrics,
        replace_request_metrics,
    )

    layer_class = getattr(instruments, "RunnerTrafficMetricsMiddleware", None)
    assert layer_class is not None, "bentoml moved RunnerTrafficMetricsMiddleware"

    async def inner(scope, receive, send) -> None:
        pass

    stack = Outer(layer_class(inner, namespace="iris_internals_test", skip_paths=["/livez"]))
    found = seam.bentoml_request_metrics(stack)
    assert found is not None, "RunnerTrafficMetricsMiddleware is not found through .app"
    assert found.skip_paths == ("/livez",), "its skip_paths are not what it was given"
    assert found.total._labelnames == (
        "endpoint",
        "service_name",
        "service_version",
        "http_response_code",
        "runner_name",
    ), "BentoML's request count has other labels"
    assert found.duration._labelnames == found.total._labelnames, "its duration: other labels"
    assert found.in_progress._labelnames == (
        "endpoint",
        "service_name",
        "service_version",
        "runner_name",
    ), "BentoML's requests in progress have other labels"
    assert found.last_request._labelnames == ("service_name", "service_version", "runner_name")
    assert found.total._name == "iris_internals_test_request"  # exposed with _total

    assert replace_request_metrics(stack, MetricBuffer())
    assert isinstance(stack.app, RequestMetrics), "not replaced in its parent's .app"
    assert stack.app.app is inner, "the replacement does not call what BentoML's layer called"
    assert seam.bentoml_request_metrics(stack) is None


PROTOCOLS = ["h11", "httptools"]


def lifespan_and_answer(on_startup):
    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                on_startup(asyncio.get_running_loop())
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.mark.parametrize("http", PROTOCOLS)
def test_uvicorn_opens_its_listeners_after_the_lifespan_starts_and_keeps_its_request_in_cycle(
    http: str,
) -> None:
    protocols: list[asyncio.Protocol] = []

    def wrap(protocol: asyncio.Protocol) -> asyncio.Protocol:
        protocols.append(protocol)
        return protocol

    app = lifespan_and_answer(lambda loop: seam.wrap_listeners(loop, wrap))
    seen: dict[str, object] = {}

    async def main() -> None:
        async with uvicorn_serving(app, http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.05)
            assert protocols, (
                f"uvicorn {uvicorn.__version__} opened its listeners before the lifespan started,"
                " or not through loop.create_server: connections are not guarded"
            )
            (protocol,) = protocols
            assert seam.tracks_requests(protocol), (
                f"uvicorn {uvicorn.__version__}'s {http} protocol has no `cycle`"
            )
            seen["before"] = seam.current_request(protocol)
            writer.write(request())
            await read_answer(reader)
            seen["after"] = seam.current_request(protocol)
            seen["answering"] = seam.answering(protocol)
            writer.close()

    asyncio.run(main())
    assert seen["before"] is None, f"{http}: `cycle` is set before any request head"
    assert seen["after"] is not None, f"{http}: `cycle` is not the request once its head is read"
    assert seen["answering"] is False, f"{http}: `cycle.response_complete` is not set once answered"


@pytest.mark.parametrize("http", PROTOCOLS)
def test_uvicorn_builds_no_access_line_when_its_access_logger_reaches_no_handler(
    http: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    module = importlib.import_module(f"uvicorn.protocols.http.{http}_impl")
    monkeypatch.setattr(module, "get_client_addr", lambda scope: built.append(scope) or "")
    access = logging.getLogger(seam.UVICORN_ACCESS_LOGGER)
    monkeypatch.setattr(access, "handlers", [])
    app = lifespan_and_answer(lambda loop: None)

    async def one_answer() -> None:
        async with uvicorn_serving(app, http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request())
            await read_answer(reader)
            writer.close()

    monkeypatch.setattr(access, "propagate", False)
    asyncio.run(one_answer())
    assert not built, (
        f"uvicorn {uvicorn.__version__}'s {http} protocol builds its access line for a logger"
        " with no handler: logs.py no longer saves that work"
    )
    monkeypatch.setattr(access, "handlers", [logging.NullHandler()])
    asyncio.run(one_answer())
    assert built, f"uvicorn {uvicorn.__version__}'s {http} protocol no longer calls get_client_addr"


def test_bentoml_keeps_its_timeout_layer_with_its_inner_app_and_seconds() -> None:
    from bentoml._internal.server.http import traffic

    layer_class = getattr(traffic, "TimeoutMiddleware", None)
    assert layer_class is not None, "bentoml moved TimeoutMiddleware"

    async def inner(scope, receive, send) -> None:
        pass

    stack = Outer(layer_class(inner, timeout=3))
    made: list[tuple[object, float]] = []
    assert seam.replace_timeout(stack, lambda app, seconds: made.append((app, seconds)) or app)
    assert made == [(inner, 3)], "TimeoutMiddleware no longer keeps .app and .timeout"


def test_opentelemetry_tracing_layer_is_passed_by_untraced_paths_only() -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    reached: list[str] = []
    traced: list[str] = []

    async def inner(scope, receive, send) -> None:
        reached.append(scope["path"])

    class CountedTracing(OpenTelemetryMiddleware):
        async def __call__(self, scope, receive, send) -> None:
            traced.append(scope["path"])
            await super().__call__(scope, receive, send)

    tracing = CountedTracing(inner, excluded_urls="/iris/classify_iris,/v2/")
    stack = Outer(tracing)
    assert seam.bypass_tracing(stack, ["/iris/classify_iris", "/v2/"]), (
        "opentelemetry moved OpenTelemetryMiddleware"
    )

    async def nothing() -> dict:
        return {"type": "http.disconnect"}

    async def call(path: str) -> None:
        scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
        await stack.app(scope, nothing, nothing)

    for path in ("/iris/classify_iris", "/v2/models/iris_classifier/infer", "/iris/model"):
        asyncio.run(call(path))
    assert reached == ["/iris/classify_iris", "/v2/models/iris_classifier/infer", "/iris/model"]
    assert traced == ["/iris/model"], "an untraced path went through the tracing layer"
    assert tracing.app is inner, "OpenTelemetryMiddleware no longer keeps its inner app in .app"
    stack.app.app = Outer(inner)
    assert tracing.app is stack.app.app, "a layer put inside the bypass is not the tracing's"


@bentoml.service(metrics={"enabled": False})
class Plain:
    @bentoml.api
    def echo(self, text: str) -> str:
        return text


def test_bentoml_builds_a_starlette_stack_the_rewrite_takes_itself_out_of() -> None:
    """The whole stack as Starlette's `middleware_stack` once the lifespan starts, reached by
    `scope["app"]`, with BentoML's own paths behind it."""
    from starlette.testclient import TestClient

    rewritten: list[object] = []

    def rewrite(stack):
        rewritten.append(stack)
        return stack

    seam.rewrite_stack_at_startup(Plain, rewrite)
    application = Plain.to_asgi()
    with TestClient(application) as client:
        assert rewritten, "the stack was not rewritten when the lifespan started"
        assert application.middleware_stack is rewritten[0], "middleware_stack is not read per call"
        layers = seam.layers(application.middleware_stack)
        assert not any(isinstance(layer, seam.StackRewrite) for layer in layers), (
            "the rewrite is still in the stack: no layer holds it in .app"
        )
        # /metrics is served by the service's own metrics, turned off here.
        for path in seam.BENTOML_PATHS - {seam.METRICS_PATH}:
            assert client.get(path).status_code == 200, f"BentoML no longer answers {path}"
    assert len(rewritten) == 1, "the stack was rewritten more than once"


@pytest.mark.parametrize("debug", [False, True])
def test_starlettes_server_error_layer_tops_bentomls_stack_and_goes_without_debug_pages(
    debug: bool,
) -> None:
    from starlette.middleware.errors import ServerErrorMiddleware
    from starlette.testclient import TestClient

    stacks: list[object] = []
    seam.rewrite_stack_at_startup(Plain, lambda stack: stacks.append(stack) or stack)
    with TestClient(Plain.to_asgi()):
        pass
    (stack,) = stacks
    assert type(stack) is ServerErrorMiddleware, "BentoML's stack no longer starts with Starlette's"
    assert (stack.handler, stack.debug) == (None, False), "ServerErrorMiddleware changed"
    stack.debug = debug
    kept = seam.without_server_errors(stack)
    assert kept is (stack if debug else stack.app), "debug pages must stay; the rest must go"


def test_bentoml_names_the_worker_and_documents_the_service() -> None:
    assert hasattr(bentoml.server_context, "worker_index"), (
        "bentoml.server_context.worker_index moved"
    )
    assert not seam.in_worker(), "a test process is no worker"
    document = seam.openapi_document(Plain)
    assert "/echo" in document["paths"], "bentoml's openapi_spec.asdict() has no paths"


def report_of(script: str, moved: str) -> dict:
    """The JSON report `script` prints last, run in a process of its own; `moved` says what an
    upgrade changed if the script fails."""
    return python_report(script, moved)


# What BentoML's worker does to logging (`configure_server_logging`) and what logs.py then
# undoes, in a process of its own: dictConfig closes every handler of the process it runs in.
SERVER_LOGGING = """
import json, logging
from bentoml._internal.log import configure_server_logging
from iris_classifier.serving import seam
from iris_classifier.serving.telemetry import logs

def handled():
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    return {lg.name: [type(h).__name__ for h in lg.handlers] for lg in loggers if lg.handlers}

configure_server_logging()
root = logging.getLogger()
report = {
    "by_bentoml": handled(),
    "root_unrecognised": [type(h).__name__ for h in root.handlers if not seam.bentoml_log_handler(h)],
}
logs.configure_logging("json", "replica")
report["left"] = {name: kinds for name, kinds in handled().items() if kinds != ["BatchedLineHandler"]}
print(json.dumps(report))
"""


def test_bentoml_server_logging_puts_handlers_only_where_logs_py_takes_them_off() -> None:
    report = report_of(SERVER_LOGGING, "BentoML's configure_server_logging moved")
    unnamed = set(report["by_bentoml"]) - {"root", *seam.SERVER_LOGGERS}
    assert not unnamed, f"BentoML puts handlers on loggers SERVER_LOGGERS lacks: {sorted(unnamed)}"
    assert not report["root_unrecognised"], (
        f"BentoML's root handlers are not what bentoml_log_handler takes: {report['root_unrecognised']}"
    )
    assert not report["left"], f"handlers left beside the service's own: {report['left']}"


def test_bento_yaml_as_bentoml_writes_it_is_read_by_bento_manifest_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bento.yaml `bentoml build` writes for a `@bentoml.service` class, made by BentoML's
    own classes: the packed model under its service's entry, the version among the labels."""
    from bentoml._internal.bento import bento
    from bentoml._internal.tag import Tag

    from iris_classifier.serving import config

    assert bento.BENTO_YAML_FILENAME == "bento.yaml", "bentoml renamed bento.yaml"
    info = bento.BentoInfoV2(
        tag=Tag("iris-classifier", "b1"),
        service="service:IrisClassifier",
        labels={"version": "9.8.7"},
        services=[
            bento.BentoServiceInfo(
                name="IrisClassifier",
                service="",
                models=[bento.BentoModelInfo(tag="iris_classifier:packed1")],
            )
        ],
    )
    with (tmp_path / bento.BENTO_YAML_FILENAME).open("w") as stream:
        info.dump(stream)
    monkeypatch.setenv("BENTO_PATH", str(tmp_path))
    monkeypatch.delenv("IRIS_MODEL", raising=False)
    manifest = seam.bento_manifest()
    assert manifest is not None, "bento_manifest() does not find bento.yaml under BENTO_PATH"
    try:
        packed = config.packed_model_tag()
    except ValueError as error:
        packed = str(error)
    assert packed == "iris_classifier:packed1", (
        f"bento.yaml no longer lists the packed model under services[].models[].tag: {packed}"
    )
    assert (manifest.get("labels") or {}).get("version") == "9.8.7", (
        "bento.yaml no longer keeps the build's labels under `labels`"
    )


def test_bentoml_images_say_where_the_bento_is() -> None:
    from bentoml._internal.container.frontend import dockerfile

    template = Path(dockerfile.__file__).with_name("templates") / "base_v2.j2"
    assert template.is_file(), "BentoML's image template base_v2.j2 moved"
    assert "ENV BENTO_PATH=" in template.read_text(), (
        "BentoML's image no longer sets BENTO_PATH, where bento_manifest() looks"
    )


# BentoML's app module with the proxy module put off, in a process of its own: whether the app
# module imported it is a fact of the process.
DEFERRED_PROXY = """
import json, sys
from iris_classifier.serving import seam

report = {"deferred": seam.defer_proxy_module()}
from _bentoml_impl.server import app
report["imported_before_use"] = sorted(m for m in ("aiohttp", "pyparsing") if m in sys.modules)
stand_in = sys.modules[seam.PROXY_MODULE]
report["app_binds_stand_in"] = app.create_proxy_app is stand_in.create_proxy_app
stand_in.__name__  # a dunder read stays on the stand-in
report["still_deferred"] = sys.modules[seam.PROXY_MODULE] is stand_in
stand_in.logger  # any other name is the real module's
report["loaded_on_use"] = sys.modules[seam.PROXY_MODULE] is not stand_in
real = sys.modules[seam.PROXY_MODULE]
report["real_is_bentomls"] = real.create_proxy_app.__module__ == seam.PROXY_MODULE
report["again"] = seam.defer_proxy_module()
print(json.dumps(report))
"""


def test_bentoml_app_takes_its_proxy_app_from_the_module_the_worker_puts_off() -> None:
    report = report_of(DEFERRED_PROXY, "BentoML's proxy module moved")
    assert report["deferred"], "defer_proxy_module found the proxy module already imported"
    assert report["imported_before_use"] == [], (
        f"BentoML's app module imports {report['imported_before_use']} besides its proxy module"
    )
    assert report["app_binds_stand_in"], "BentoML's app module no longer imports create_proxy_app"
    assert report["still_deferred"], "reading a dunder of the stand-in loaded the real module"
    assert report["loaded_on_use"], "reading the stand-in's names did not load the real module"
    assert report["real_is_bentomls"], "the loaded module is not BentoML's proxy module"
    assert report["again"] is False, "a second call replaced the imported module"


# BentoML's app module with its package's supervisor module put off, in a process of its own,
# as the worker imports it.
DEFERRED_SUPERVISOR = """
import json, sys
from iris_classifier.serving import seam

SUPERVISOR_PACKAGES = ("circus", "zmq", "tornado")
report = {"deferred": seam.defer_supervisor_module()}
from _bentoml_impl.server import app
import _bentoml_impl.server as package
report["imported_before_use"] = sorted(m for m in SUPERVISOR_PACKAGES if m in sys.modules)
stand_in = sys.modules[seam.SUPERVISOR_MODULE]
report["package_binds_stand_in"] = package.serve_http is stand_in.serve_http
stand_in.__name__
report["still_deferred"] = sys.modules[seam.SUPERVISOR_MODULE] is stand_in
stand_in.logger
report["loaded_on_use"] = sys.modules[seam.SUPERVISOR_MODULE] is not stand_in
real = sys.modules[seam.SUPERVISOR_MODULE]
report["real_is_bentomls"] = real.serve_http.__module__ == seam.SUPERVISOR_MODULE
report["imported_on_use"] = sorted(m for m in SUPERVISOR_PACKAGES if m in sys.modules)
report["again"] = seam.defer_supervisor_module()
print(json.dumps(report))
"""


def test_bentoml_app_package_takes_serve_http_from_the_module_the_worker_puts_off() -> None:
    report = report_of(DEFERRED_SUPERVISOR, "BentoML's supervisor module moved")
    assert report["deferred"], "defer_supervisor_module found the package already imported"
    assert report["imported_before_use"] == [], (
        f"BentoML's app module imports {report['imported_before_use']} besides its supervisor"
    )
    assert report["package_binds_stand_in"], (
        "_bentoml_impl.server no longer imports serve_http from its serving module"
    )
    assert report["still_deferred"], "reading a dunder of the stand-in loaded the real module"
    assert report["loaded_on_use"], "reading the stand-in's names did not load the real module"
    assert report["real_is_bentomls"], "the loaded module is not BentoML's supervisor module"
    assert report["imported_on_use"] == ["circus", "tornado", "zmq"], (
        "BentoML's supervisor no longer imports circus, pyzmq and tornado: nothing to put off"
    )
    assert report["again"] is False, "a second call replaced the imported module"


# A stand-in's function, called, is the real module's, with its arguments and its answer.
CALLED_THROUGH_STAND_IN = """
import json, sys
from iris_classifier.serving import seam

report = {"deferred": seam.put_off("colorsys", "rgb_to_hsv", imported_by="no.such.module")}
stand_in = sys.modules["colorsys"]
import colorsys
report["import_finds_stand_in"] = colorsys is stand_in
report["answer"] = colorsys.rgb_to_hsv(0.0, 0.0, 1.0)
report["loaded_on_call"] = sys.modules["colorsys"] is not stand_in
report["real"] = sys.modules["colorsys"].rgb_to_hsv.__module__
print(json.dumps(report))
"""


def test_a_put_off_function_called_imports_the_real_module_and_answers_from_it() -> None:
    report = report_of(CALLED_THROUGH_STAND_IN, "put_off")
    assert report["deferred"]
    assert report["import_finds_stand_in"], "an import of a put-off module is not the stand-in"
    assert report["answer"] == [2 / 3, 1.0, 1.0], "the call did not answer as the real function"
    assert report["loaded_on_call"], "calling the stand-in's function left the stand-in in place"
    assert report["real"] == "colorsys"


# BentoML's GPU count as its main process takes it when it starts the workers, in a process of
# its own (pynvml, once imported, stays), with or without the seam's count in its place.
GPU_COUNT = """
import ctypes, json, sys
from iris_classifier.serving import seam

replaced = seam.count_gpus_without_pynvml_where_nvml_is_missing() if {replace} else None
from _bentoml_impl.server.allocator import ResourceAllocator

allocator = ResourceAllocator()
try:
    ctypes.CDLL(seam.NVML_LIBRARY)
    loadable = True
except OSError:
    loadable = False
print(json.dumps({{
    "replaced": replaced,
    "again": seam.count_gpus_without_pynvml_where_nvml_is_missing() if {replace} else None,
    "gpus": allocator.system_resources["nvidia.com/gpu"],
    "pynvml": "pynvml" in sys.modules,
    "nvml_loadable": loadable,
}}))
"""


def test_bentoml_counts_gpus_through_pynvml_as_the_seam_counts_them() -> None:
    bentomls = report_of(GPU_COUNT.format(replace=False), "BentoML's GPU count moved")
    assert bentomls["pynvml"], (
        "BentoML's ResourceAllocator no longer imports pynvml to count GPUs: nothing to put off"
    )
    seams = report_of(GPU_COUNT.format(replace=True), "NvidiaGpuResource.from_system moved")
    assert seams["replaced"] is True, "the seam found BentoML's count already replaced"
    assert seams["again"] is False, "a second call replaced the count again"
    assert seams["gpus"] == bentomls["gpus"], "the seam's count differs from BentoML's"
    assert seams["pynvml"] == seams["nvml_loadable"], (
        "pynvml was imported where NVML cannot be loaded, or skipped where it can"
    )
