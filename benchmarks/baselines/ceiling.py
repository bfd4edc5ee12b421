"""The ceiling a single-flower request is measured against: the least an ASGI app can do.

It reads the request body, parses it as JSON (the service must at least do that) and answers a
fixed JSON body of the size of the service's answer, on the same uvicorn (uvloop, httptools) that
BentoML runs the service on. Whatever a request costs above this is the service's own work.

    uvicorn benchmarks.baselines.ceiling:app --no-access-log --port 5000
"""

from __future__ import annotations

from typing import Any

import orjson

# What the single-flower route answers, give or take the digits.
ANSWER = orjson.dumps(
    {
        "class": "setosa",
        "probability": 0.98,
        "probabilities": {"setosa": 0.9787, "versicolor": 0.0213, "virginica": 0.0},
        "model_version": "ceiling",
        "out_of_range": [],
    }
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


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
        orjson.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
