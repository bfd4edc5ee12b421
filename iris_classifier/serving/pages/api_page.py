"""The API page at `/`, rendered from the OpenAPI document and the model card rather than
BentoML's Swagger UI, so a new route appears by itself and no upgrade brings BentoML's
boilerplate back (iris_classifier/serving/README.md#the-api-page-and-the-openapi-document).
Script and style are inline and allowed by their hashes: the page loads nothing else."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from iris_classifier.flowers import FEATURE_UNIT, MODEL_NAME
from iris_classifier.model_format import version_of
from iris_classifier.serving.config import MAX_BODY_BYTES
from iris_classifier.serving.http.errors import Problem
from iris_classifier.serving.protocols.contract import IrisFeatures

PAGE_ASSETS = Path(__file__).with_name("page")
SCRIPT = (PAGE_ASSETS / "page.js").read_text()
STYLE = (PAGE_ASSETS / "page.css").read_text()


def _source_hash(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    return f"'sha256-{digest}'"


CONTENT_SECURITY_POLICY = (
    "default-src 'none'; connect-src 'self'; img-src data:; "
    f"script-src {_source_hash(SCRIPT)}; style-src {_source_hash(STYLE)}; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
).encode()

# Sent from the page's error section: three problems, so the answer shows the whole format.
INVALID_FLOWER = {**IrisFeatures.model_config["json_schema_extra"]["example"]}
INVALID_FLOWER.update(sepal_length=-1, sepal_width="4", petal_width=400)
STATUSES = (
    ("400", "The input breaks the contract: each field and reason is named."),
    ("404", "No such route, or (Open Inference Protocol) no such model or version."),
    ("405", "A route asked with a method it does not answer (the Allow header lists them)."),
    ("413", f"A body over {MAX_BODY_BYTES / 2**20:g} MiB (IRIS_MAX_BODY_BYTES sets the limit)."),
    ("415", "A body not sent as application/json."),
    ("503", "The model is not loaded yet, or the replica is shutting down."),
    ("504", "The prediction took longer than the service's timeout."),
)
METRIC_NAMES = {
    "holdout_accuracy": "hold-out accuracy",
    "holdout_macro_f1": "hold-out macro-F1",
    "cv_accuracy_mean": "cross-validation accuracy",
}


def render_page(document: Mapping[str, Any], served: Mapping[str, Any]) -> str:
    info = document["info"]
    title = escape(info["title"])
    introduction = escape(info["description"].split("\n\n")[0])
    endpoints = "".join(
        _tag_section(name, description, document["paths"], served)
        for name, description in _tags(document).items()
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} {escape(info["version"])}</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{title} <span class="version">version {escape(info["version"])}</span></h1>
<p>{introduction}</p>
<nav><a href="#model">Model</a><a href="#endpoints">Endpoints</a><a href="#errors">Errors</a>
<a href="/docs.json">OpenAPI document (/docs.json)</a></nav>
</header>
{_model_section(served)}
<section id="endpoints">
<h2>Endpoints</h2>
<p>Each example can be edited and sent with <b>Try it</b>; the answer shows its status, its
<code>X-Served-By</code> (the replica that answered) and <code>X-Request-ID</code> (named on
every log line of the request).</p>
{endpoints}
</section>
{_error_section()}
<script>{SCRIPT}</script>
</body>
</html>
"""


def _model_section(served: Mapping[str, Any]) -> str:
    if not served:
        return '<section id="model"><h2>Model</h2><p>No model is loaded yet.</p></section>'
    metrics = served.get("metrics", {})
    rows = [
        ("Model version", served.get("model_version")),
        ("Estimator", served.get("estimator")),
        ("Runs as", f"{served.get('precision')} ONNX{_opsets(served)}, by ONNX Runtime"),
        ("Classes", ", ".join(served.get("class_names", ()))),
        (
            f"Features ({served.get('feature_unit', FEATURE_UNIT)})",
            ", ".join(served.get("feature_names", ())),
        ),
        *((label, f"{metrics[key]:.4f}") for key, label in METRIC_NAMES.items() if key in metrics),
    ]
    listed = "".join(
        f"<dt>{escape(label)}</dt><dd>{escape(str(value))}</dd>" for label, value in rows
    )
    return f"""<section id="model">
<h2>Model</h2>
<dl>{listed}</dl>
<p>Its whole card, hyper-parameters and confusion matrix included: <code>GET /iris/model</code>.</p>
</section>"""


def _opsets(served: Mapping[str, Any]) -> str:
    opsets = served.get("opset")
    if not isinstance(opsets, Mapping):
        return ""
    return " (opsets " + ", ".join(f"{domain} {opsets[domain]}" for domain in sorted(opsets)) + ")"


def _tags(document: Mapping[str, Any]) -> dict[str, str]:
    """Each tag's description, in the document's order; an operation without a tag is "Other"."""
    tags = {tag["name"]: tag.get("description", "") for tag in document.get("tags", ())}
    for operations in document["paths"].values():
        for operation in operations.values():
            for name in operation.setdefault("tags", ["Other"]):
                tags.setdefault(name, "")
    return tags


def _tag_section(
    name: str, description: str, paths: Mapping[str, Any], served: Mapping[str, Any]
) -> str:
    operations = [
        _operation(method.upper(), path, operation, served)
        for path, operations in paths.items()
        for method, operation in operations.items()
        # An operation is shown once, under its first tag.
        if operation["tags"][0] == name
    ]
    if not operations:
        return ""
    return f"<h3>{escape(name)}</h3><p>{escape(description)}</p>{''.join(operations)}"


def _operation(
    method: str, path: str, operation: Mapping[str, Any], served: Mapping[str, Any]
) -> str:
    # Templated routes are tried on the served model, so every example is a working request.
    version = version_of(str(served.get("model_version", "")))
    target = path.replace("{model}", MODEL_NAME).replace("{version}", version)
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    body = content.get("schema", {}).get("example")
    return f"""<section class="endpoint" data-endpoint="{escape(method)} {escape(path)}">
<h3><span class="method {method.lower()}">{method}</span> <code>{escape(path)}</code></h3>
<p>{escape(operation.get("description", ""))}</p>
{_example(method, target, body)}
</section>
"""


def _example(method: str, target: str, body: Any) -> str:
    sent = ""
    curl = f"curl -s <span data-origin>http://localhost:3000</span>{escape(target)}"
    if body is not None:
        text = _readable_json(body)
        sent = f'<textarea rows="{min(text.count(chr(10)) + 1, 16)}" spellcheck="false">{escape(text)}</textarea>'
        curl += f" -H 'Content-Type: application/json' -d '{escape(json.dumps(body))}'"
    return f"""<div class="example" data-method="{method}" data-path="{escape(target)}">
{sent}
<button type="button">Try it</button><span class="request-line">{method} {escape(target)}</span>
<pre class="curl">{curl}</pre>
<div class="answer" hidden><p class="status"></p><pre class="headers"></pre><pre class="body"></pre></div>
</div>"""


def _readable_json(value: Any, indent: str = "") -> str:
    """JSON with one line per object or list that holds only numbers and strings: a flower,
    or a tensor's row, reads as one line."""
    children = value.values() if isinstance(value, dict) else value
    if not isinstance(value, dict | list) or not any(
        isinstance(child, dict | list) for child in children
    ):
        return json.dumps(value)
    inner = indent + "  "
    if isinstance(value, dict):
        items = [
            f"{inner}{json.dumps(key)}: {_readable_json(child, inner)}"
            for key, child in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    items = [f"{inner}{_readable_json(child, inner)}" for child in value]
    return "[\n" + ",\n".join(items) + f"\n{indent}]"


def _error_section() -> str:
    statuses = "".join(
        f"<tr><td>{status}</td><td>{escape(meaning)}</td></tr>" for status, meaning in STATUSES
    )
    return f"""<section id="errors">
<h2>Errors</h2>
<p>Every refusal, on every route, is JSON of one shape. <code>error</code> says in one line
what is wrong (on the Open Inference Protocol routes it names the tensor and row);
<code>detail</code> lists each problem (at most five, then how many more) with its
{", ".join(f"<code>{name}</code>" for name in Problem.__annotations__)}.</p>
<table><tr><th>status</th><th>when</th></tr>{statuses}</table>
<section class="endpoint" data-endpoint="refusal">
<h3>A refused flower</h3>
<p>Three problems at once: a negative length, a string, and a length above the 100 cm limit.</p>
{_example("POST", "/iris/classify_iris", INVALID_FLOWER)}
</section>
</section>"""
