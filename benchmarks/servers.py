"""The servers under test: how to start each one and where it says it is ready.

Every server is started the way its users would start it, with one process serving (the
BentoML service sizes its workers itself) and the same model from the same model store. Beside
the service as `make serve` runs it stand the same service with one setting changed, each
measured against it round by round, and the ceiling: the least an ASGI app on the same uvicorn
can do for a flower.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.processes import bentoml_serve_command


@dataclass(frozen=True)
class Server:
    name: str
    description: str
    command: Callable[[int], list[str]]
    ready_path: str = "/readyz"
    env: dict[str, str] = field(default_factory=dict)
    # Started with IRIS_TOKEN_FILE naming a fresh token, which every request then carries.
    bearer_token: bool = False


def uvicorn_command(app: str) -> Callable[[int], list[str]]:
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))

    def command(port: int) -> list[str]:
        return [uvicorn, app, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]

    return command


def ceiling_command(port: int) -> list[str]:
    app = "benchmarks.baselines.ceiling:app"
    return [*uvicorn_command(app)(port), "--no-access-log", "--log-level", "warning"]


BENTOML = Server(
    name="bentoml",
    description="this service: `bentoml serve service:IrisClassifier`",
    command=bentoml_serve_command,
)
# A second model store holding a random forest (make bench trains it), served the same way, so
# its figures sit beside the linear model's.
RANDOM_FOREST_HOME_VARIABLE = "BENCH_RANDOM_FOREST_HOME"
BENTOML_RANDOM_FOREST = Server(
    name="bentoml-random-forest",
    description="this service serving a random forest (`train.py --model random-forest`)",
    command=bentoml_serve_command,
    env={"BENTOML_HOME": os.environ.get(RANDOM_FOREST_HOME_VARIABLE, "")},
)
# The service with one setting changed, each paired with BENTOML in the report.
BENTOML_AUTH = Server(
    name="bentoml-auth",
    description="this service with bearer tokens on (`IRIS_TOKEN_FILE`), every request "
    "carrying its token",
    command=bentoml_serve_command,
    bearer_token=True,
)
BENTOML_PREDICTION_LOG = Server(
    name="bentoml-prediction-log",
    description="this service logging 1 % of its predictions (`IRIS_PREDICTION_LOG_RATE=0.01`)",
    command=bentoml_serve_command,
    env={"IRIS_PREDICTION_LOG_RATE": "0.01"},
)
SETTINGS_PAIRED_WITH_SERVICE = (BENTOML_AUTH.name, BENTOML_PREDICTION_LOG.name)
CEILING = Server(
    name="ceiling",
    description="the ceiling: a bare ASGI app on the same uvicorn (uvloop, httptools), no "
    "access log, that parses the flower and answers a fixed linear model's JSON",
    command=ceiling_command,
)
FASTAPI = Server(
    name="fastapi",
    description="baseline (a): FastAPI + uvicorn, model loaded once, `predict_proba`",
    command=uvicorn_command("benchmarks.baselines.fastapi_loaded_once:app"),
)
FIT_PER_REQUEST = Server(
    name="fit-per-request",
    description="baseline (b): the article's approach, a model fitted on every request",
    command=uvicorn_command("benchmarks.baselines.fit_per_request:app"),
)

# The service and its paired settings first, so that a round mostly runs them back to back.
ALL_SERVERS = {
    server.name: server
    for server in (
        BENTOML,
        BENTOML_AUTH,
        BENTOML_PREDICTION_LOG,
        CEILING,
        FASTAPI,
        BENTOML_RANDOM_FOREST,
        FIT_PER_REQUEST,
    )
}
REFERENCE = FASTAPI.name
