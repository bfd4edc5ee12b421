"""Every setting the service reads from its environment, read in this one place."""

from __future__ import annotations

import importlib.metadata
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from iris_classifier.flowers import MODEL_NAME
from iris_classifier.serving.seam import bento_manifest

PROJECT_NAME = "iris-classifier"

# One body limit for every route. Two row limits, for one reason: the largest request of each
# form fits inside the body limit. A JSON flower is about 90 bytes (5,000: 450 KB); a tensor
# row 16 bytes in binary FP32, about 20 in JSON (20,000: 320 to 400 KB).
MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH_ROWS = 5_000
MAX_TENSOR_ROWS = 20_000

LOG_FORMATS = ("text", "json")

# Keeps a prediction log line of the iris classes under 16 KiB, where container runtimes split it.
PREDICTION_LOG_MAX_ROWS = 32
LOG_FLUSH_SECONDS = 0.2

CONNECTION_MAX_REQUESTS = 100
CONNECTION_MAX_SECONDS = 1.0

# Slow clients. Open connections: far above what a balancer's pool or the load test holds, and
# below the 1,024 file descriptors containerd 2 gives a process by default. A head comes in one
# packet; seconds allow for a few lost ones. A body at 1 KiB a second already outlasts the
# request timeout before it reaches the body limit.
MAX_CONNECTIONS = 500
HEAD_TIMEOUT_SECONDS = 5.0
BODY_MIN_BYTES_PER_SECOND = 1024.0


@dataclass(frozen=True)
class Settings:
    served_by: str
    max_body_bytes: int
    version: str
    # "json" for log collectors (the image and the manifests set it), "text" for a terminal.
    log_format: str
    # SIGTERM to closing the listener, while balancers take the replica out (http/shutdown.py);
    # 0 stops at once (a developer's Ctrl+C).
    drain_seconds: float
    model_tag: str  # see served_model_tag
    # A kept-alive connection's budget (http/recycling.py); 0 turns a limit off.
    connection_max_requests: int
    connection_max_seconds: float
    # Bearer tokens of the prediction routes (http/tokens.py); None leaves them open.
    token_file: Path | None = None
    # The share of prediction requests logged (0 turns it off), and the flowers a line shows.
    prediction_log_rate: float = 0.0
    prediction_log_max_rows: int = PREDICTION_LOG_MAX_ROWS
    # The longest a log line waits in the buffer: what a SIGKILL loses, at most.
    log_flush_seconds: float = LOG_FLUSH_SECONDS
    # Slow clients (http/slow_clients.py); 0 turns a bound off.
    max_connections: int = MAX_CONNECTIONS
    head_timeout_seconds: float = HEAD_TIMEOUT_SECONDS
    body_min_bytes_per_second: float = BODY_MIN_BYTES_PER_SECOND

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            # Kubernetes sets POD_NAME through the downward API; elsewhere the host name is
            # the closest thing to a replica identity.
            served_by=os.environ.get("POD_NAME") or socket.gethostname(),
            max_body_bytes=int(os.environ.get("IRIS_MAX_BODY_BYTES", MAX_BODY_BYTES)),
            version=installed_version(),
            log_format=_choice("IRIS_LOG_FORMAT", LOG_FORMATS),
            drain_seconds=float(os.environ.get("IRIS_DRAIN_SECONDS", "0")),
            model_tag=served_model_tag(),
            connection_max_requests=int(
                os.environ.get("IRIS_CONNECTION_MAX_REQUESTS", CONNECTION_MAX_REQUESTS)
            ),
            connection_max_seconds=float(
                os.environ.get("IRIS_CONNECTION_MAX_SECONDS", CONNECTION_MAX_SECONDS)
            ),
            token_file=Path(token_file)
            if (token_file := os.environ.get("IRIS_TOKEN_FILE"))
            else None,
            prediction_log_rate=_number("IRIS_PREDICTION_LOG_RATE", 0.0, 0.0, 1.0),
            prediction_log_max_rows=int(
                _number("IRIS_PREDICTION_LOG_MAX_ROWS", PREDICTION_LOG_MAX_ROWS, 1, MAX_TENSOR_ROWS)
            ),
            log_flush_seconds=_number("IRIS_LOG_FLUSH_SECONDS", LOG_FLUSH_SECONDS, 0.001, 60.0),
            max_connections=int(_number("IRIS_MAX_CONNECTIONS", MAX_CONNECTIONS)),
            head_timeout_seconds=_number("IRIS_HEAD_TIMEOUT_SECONDS", HEAD_TIMEOUT_SECONDS),
            body_min_bytes_per_second=_number(
                "IRIS_BODY_MIN_BYTES_PER_SECOND", BODY_MIN_BYTES_PER_SECOND
            ),
        )


def _choice(variable: str, choices: tuple[str, ...]) -> str:
    """The variable's value if it is one of `choices` (the first is the default)."""
    value = os.environ.get(variable, choices[0]).strip().lower()
    if value not in choices:
        raise ValueError(f"{variable}={value!r}: expected one of {', '.join(choices)}")
    return value


def _number(variable: str, default: float, low: float = 0, high: float = math.inf) -> float:
    """The variable's finite number from `low` to `high` (an integer when `default` is one), or
    `default` when it is unset or empty. Without `high` it is a bound that 0 turns off."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    whole = isinstance(default, int)
    expected = f"{'a whole' if whole else 'a'} number"
    if high == math.inf:
        expected += ", 0 or more (0 turns it off)"
    else:
        expected += f" from {low:g} to {high:g}"
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r}: expected {expected}") from None
    if not low <= value <= high or value == math.inf:  # NaN fails the first test too
        raise ValueError(f"{variable}={text!r}: expected {expected}")
    return value


def served_model_tag() -> str:
    """The model the Bento packs, whatever `latest` means in the store it starts with; outside
    a Bento IRIS_MODEL, else the store's latest (README.md#which-model)."""
    chosen = os.environ.get("IRIS_MODEL", "").strip()
    if chosen and ":" not in chosen:
        chosen = f"{MODEL_NAME}:{chosen}"
    packed = packed_model_tag()
    if packed is None:
        return chosen or f"{MODEL_NAME}:latest"
    if chosen and chosen != packed:
        raise ValueError(f"IRIS_MODEL={chosen}: this Bento holds {packed} only")
    return packed


def packed_model_tag() -> str | None:
    """The model tag the Bento being served was built with, or None outside a Bento."""
    manifest = bento_manifest()
    if manifest is None:
        return None
    # BentoML lists a service's models under its entry in `services`, older Bentos at the top.
    listed = [
        *(manifest.get("models") or []),
        *(
            model
            for service in manifest.get("services") or []
            for model in service.get("models") or []
        ),
    ]
    tags = sorted(
        {
            str(model["tag"])
            for model in listed
            if str(model.get("tag", "")).split(":")[0] == MODEL_NAME
        }
    )
    if len(tags) != 1:
        raise ValueError(f"the Bento's bento.yaml packs {len(tags)} {MODEL_NAME} models: {tags}")
    return tags[0]


def installed_version() -> str:
    """pyproject.toml's version: from the installed project (make install), else from the
    `version` label `make build` gives the Bento that the image serves."""
    try:
        return importlib.metadata.version(PROJECT_NAME)
    except importlib.metadata.PackageNotFoundError:
        labels = (bento_manifest() or {}).get("labels") or {}
        return str(labels.get("version", "unknown"))
