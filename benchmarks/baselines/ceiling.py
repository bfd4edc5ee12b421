"""The ceiling the service is measured against: the least an ASGI app can do for a flower.

On the same uvicorn (uvloop, httptools) that BentoML runs the service on, with no access log,
it reads the body, parses the JSON, reads the four measurements, computes a small fixed model
(a logistic regression fitted once on the bundled iris data, its weights written below) and
answers JSON computed for the request, the single flower's in the service's shape. Whatever a
request costs the service above this is the service's own work: validation, the ONNX model,
metrics, the access line, BentoML's layers. `/iris/classify_batch` is answered the same way,
row by row, so that `make bench` can run its batch load on it; any GET answers 200, for
readiness.

    uvicorn benchmarks.baselines.ceiling:app --no-access-log --port 5000
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from iris_classifier.flowers import FEATURE_NAMES

CLASS_NAMES = ("setosa", "versicolor", "virginica")
# Per class: the weights of sepal length, sepal width, petal length, petal width, then the
# intercept. Multinomial logistic regression on the 150 bundled flowers, rounded to 2 digits.
MODEL = (
    (-0.42, 0.97, -2.52, -1.08, 9.86),
    (0.53, -0.32, -0.21, -0.94, 2.23),
    (-0.11, -0.65, 2.72, 2.03, -12.09),
)
MODEL_VERSION = "ceiling"
JSON_HEADER = (b"content-type", b"application/json")


def probabilities(flower: dict[str, Any]) -> list[float]:
    """The fixed model's softmax for one flower; KeyError or TypeError for a malformed one."""
    values = [float(flower[name]) for name in FEATURE_NAMES]
    scores = [
        w0 * values[0] + w1 * values[1] + w2 * values[2] + w3 * values[3] + bias
        for w0, w1, w2, w3, bias in MODEL
    ]
    top = max(scores)
    exps = [math.exp(score - top) for score in scores]
    total = sum(exps)
    return [round(e / total, 4) for e in exps]


def row(flower: dict[str, Any]) -> dict[str, Any]:
    """A batch row, as the service answers one: the class and its probability."""
    shares = probabilities(flower)
    best = shares.index(max(shares))
    return {"class": CLASS_NAMES[best], "probability": shares[best]}


def classified(flower: dict[str, Any]) -> dict[str, Any]:
    shares = probabilities(flower)
    best = shares.index(max(shares))
    return {
        "class": CLASS_NAMES[best],
        "probability": shares[best],
        "probabilities": dict(zip(CLASS_NAMES, shares, strict=True)),
        "model_version": MODEL_VERSION,
        "out_of_range": [],
    }


def answer_for(path: str, body: bytes) -> tuple[int, bytes]:
    try:
        request = orjson.loads(body)
        if path == "/iris/classify_batch":
            rows = [row(flower) for flower in request["flowers"]]
            answer: dict[str, Any] = {"predictions": rows, "model_version": MODEL_VERSION}
        else:
            answer = classified(request)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        return 400, orjson.dumps({"error": f"invalid input: {type(error).__name__}"})
    return 200, orjson.dumps(answer)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        # Lifespan and anything else: nothing to set up.
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        if message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        status, answer = answer_for(scope["path"], body)
    else:
        status, answer = 200, b'"ok"'
    headers = [JSON_HEADER, (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
