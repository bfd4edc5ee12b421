"""What iris_classifier/serving/uvicorn_seam.py relies on in the installed uvicorn, for each
protocol implementation it may pick: each check fails with one line naming what moved."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn

from iris_classifier.serving import uvicorn_seam
from tests.support.raw_http import read_answer, request, uvicorn_serving

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

    app = lifespan_and_answer(lambda loop: uvicorn_seam.wrap_listeners(loop, wrap))
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
            assert uvicorn_seam.tracks_requests(protocol), (
                f"uvicorn {uvicorn.__version__}'s {http} protocol has no `cycle`"
            )
            seen["before"] = uvicorn_seam.current_request(protocol)
            writer.write(request())
            await read_answer(reader)
            seen["after"] = uvicorn_seam.current_request(protocol)
            seen["answering"] = uvicorn_seam.answering(protocol)
            writer.close()

    asyncio.run(main())
    assert seen["before"] is None, f"{http}: `cycle` is set before any request head"
    assert seen["after"] is not None, f"{http}: `cycle` is not the request once its head is read"
    assert seen["answering"] is False, f"{http}: `cycle.response_complete` is not set once answered"
