"""KServe's Python client against a running server: what it saw, and what is wrong with it.

`observe` runs tests/support/kserve_client_probe.py in build/kserve-venv against a base URL;
`problems` lists every way the report falls short of what a KServe client needs. The tests
against `bentoml serve` and against the image share both, so they hold the server to the same
list.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES, MODEL_NAME
from tests.support import kserve_sdk

PROBE = Path(__file__).resolve().parent / "kserve_client_probe.py"
MODEL = MODEL_NAME
REQUEST_ID = "kserve-probe-1"
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
# The single-flower route rounds its probabilities to 4 places.
ROUNDING_TOLERANCE = 5.1e-5


def observe(base_url: str, token: str | None = None) -> dict[str, Any]:
    """What the client saw; with `token`, sent as a bearer token on every model call."""
    return kserve_sdk.run_script(
        PROBE, base_url, MODEL, json.dumps(FLOWERS), *filter(None, [token])
    )


def single_flower_answers(base_url: str, token: str | None = None) -> list[dict[str, Any]]:
    """The `/iris/classify_iris` answer for each of FLOWERS."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    answers = []
    for flower in FLOWERS:
        body = json.dumps(dict(zip(FEATURE_NAMES, flower, strict=True))).encode()
        request = urllib.request.Request(f"{base_url}/iris/classify_iris", body, headers)
        with urllib.request.urlopen(request, timeout=15) as response:
            answers.append(json.load(response))
    return answers


def _value(report: dict[str, Any], call: str, problems: list[str]) -> Any:
    outcome = report[call]
    if "value" not in outcome:
        problems.append(f"{call} failed: {outcome}")
        return None
    return outcome["value"]


def problems(report: dict[str, Any], single_answers: list[dict[str, Any]]) -> list[str]:
    """Every way the client's report falls short; empty when the client can use the server."""
    found: list[str] = []
    if "model_name" not in report["request_body_keys"]:
        found.append(f"the client no longer sends model_name: {report['request_body_keys']}")
    for call in ("server_live", "server_ready", "model_ready"):
        if report[call].get("value") is not True:
            found.append(f"{call} did not answer True: {report[call]}")

    server = _value(report, "server_metadata", found)
    if server is not None and not isinstance(server.get("extensions"), list):
        found.append(f"server metadata has no list of extensions: {server}")
    model = _value(report, "model_metadata", found)
    if model is not None:
        if model.get("name") != MODEL:
            found.append(f"model metadata names {model.get('name')!r}, not {MODEL!r}")
        if model.get("inputs") != [{"name": "flowers", "datatype": "FP32", "shape": [-1, 4]}]:
            found.append(f"model metadata inputs: {model.get('inputs')}")
        outputs = {output["name"]: output["datatype"] for output in model.get("outputs", [])}
        if {"probabilities": "FP32", "label": "BYTES"}.items() - outputs.items():
            found.append(f"model metadata outputs: {outputs}")

    answer = _value(report, "infer", found)
    if answer is not None:
        if answer["id"] != REQUEST_ID:
            found.append(f"the answer's id is {answer['id']!r}, not the request's {REQUEST_ID!r}")
        if answer["model_name"] != MODEL:
            found.append(f"the answer names model {answer['model_name']!r}")
        found += _answer_problems(answer["outputs"], single_answers)

    other = report["infer_other_model_in_body"]
    if other.get("status") != 400:
        found.append(f"model_name naming another model was not refused with 400: {other}")
    elif "model_name" not in other["body"]:
        found.append(f"the refusal of another model_name does not name the field: {other['body']}")
    return found


def _answer_problems(outputs: dict[str, Any], single_answers: list[dict[str, Any]]) -> list[str]:
    found = []
    probabilities = outputs.get("probabilities")
    labels = outputs.get("label")
    if probabilities is None or labels is None:
        return [f"the answer lacks probabilities or label: {sorted(outputs)}"]
    if probabilities["shape"] != [len(FLOWERS), len(CLASS_NAMES)]:
        found.append(f"probabilities have shape {probabilities['shape']}")
    for row, single in enumerate(single_answers):
        got = probabilities["data"][row]
        want = [single["probabilities"][name] for name in CLASS_NAMES]
        if any(abs(a - b) > ROUNDING_TOLERANCE for a, b in zip(got, want, strict=True)):
            found.append(f"row {row}: V2 probabilities {got}, single-flower route {want}")
        label = labels["data"][row]
        if label != single["class"]:
            found.append(f"row {row}: V2 label {label!r}, single-flower route {single['class']!r}")
    return found
