"""The servers under test: how to start each one and where it says it is ready.

Every server is started the way its users would start it, with one process serving (the
BentoML service sizes its workers itself) and the same model from the same model store.
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


def uvicorn_command(app: str) -> Callable[[int], list[str]]:
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))

    def command(port: int) -> list[str]:
        return [uvicorn, app, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]

    return command


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

ALL_SERVERS = {
    server.name: server for server in (BENTOML, BENTOML_RANDOM_FOREST, FASTAPI, FIT_PER_REQUEST)
}
REFERENCE = FASTAPI.name
