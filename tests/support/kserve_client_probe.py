"""Drive a server with KServe's own REST client (protocol v2); print what it saw as JSON.

Run with build/kserve-venv's Python (tests/support/kserve_sdk.py), never the project's:

    build/kserve-venv/bin/python tests/support/kserve_client_probe.py URL MODEL FLOWERS_JSON [TOKEN]

With TOKEN, every call on the model sends it as `Authorization: Bearer`; the server's health
calls never do (they stay open).

Every call is recorded, failures included (an exception's type and text, the HTTP status and
body), so the test that reads the report says which call broke and how. The probe itself judges
nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

REQUEST_ID = "kserve-probe-1"
OTHER_MODEL = "some_other_model"


async def record(call: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    try:
        return {"value": await call()}
    except httpx.HTTPStatusError as error:
        return {
            "error": type(error).__name__,
            "status": error.response.status_code,
            "body": error.response.text,
        }
    except Exception as error:  # the report, not the probe, judges any failure
        return {
            "error": type(error).__name__,
            "message": str(error),
            "where": traceback.format_exc(limit=3),
        }


def infer_request(model_name: str, flowers: list[list[float]]) -> InferRequest:
    tensor = InferInput(name="flowers", shape=[len(flowers), 4], datatype="FP32", data=flowers)
    return InferRequest(model_name=model_name, infer_inputs=[tensor], request_id=REQUEST_ID)


def answer(response: Any) -> dict[str, Any]:
    return {
        "id": response.id,
        "model_name": response.model_name,
        "outputs": {
            output.name: {
                "datatype": output.datatype,
                "shape": list(output.shape),
                "data": [
                    item.decode() if isinstance(item, bytes) else item
                    for item in output.as_numpy().tolist()
                ],
            }
            for output in response.outputs
        },
    }


async def probe(
    base_url: str, model: str, flowers: list[list[float]], token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    # What the client puts in the request body: "model_name" always travels with it.
    sent, _ = infer_request(model, flowers).to_rest()
    report: dict[str, Any] = {"request_body_keys": sorted(sent)}
    async with client:
        report["server_live"] = await record(lambda: client.is_server_live(base_url))
        report["server_ready"] = await record(lambda: client.is_server_ready(base_url))
        report["model_ready"] = await record(
            lambda: client.is_model_ready(base_url, model, headers)
        )

        async def infer(body_model: str) -> dict[str, Any]:
            response = await client.infer(
                base_url, infer_request(body_model, flowers), model_name=model, headers=headers
            )
            return answer(response)

        report["infer"] = await record(lambda: infer(model))
        report["infer_other_model_in_body"] = await record(lambda: infer(OTHER_MODEL))
    # InferenceRESTClient has no metadata calls: the same HTTP client library reads them.
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as http:

        async def metadata(path: str) -> Any:
            response = await http.get(path)
            response.raise_for_status()
            return response.json()

        report["server_metadata"] = await record(lambda: metadata("/v2"))
        report["model_metadata"] = await record(lambda: metadata(f"/v2/models/{model}"))
    return report


def main(argv: list[str]) -> int:
    base_url, model, flowers = argv[0], argv[1], json.loads(argv[2])
    token = argv[3] if len(argv) > 3 else None
    print(json.dumps(asyncio.run(probe(base_url, model, flowers, token))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
