"""Real 5xx answers from a live `bentoml serve`, and its metrics read as samples."""

from __future__ import annotations

import http.client
import select
import socket
from urllib.parse import urlsplit


def timed_out_request(url: str, path: str = "/iris/classify_iris", request_id: str = "slow-1"):
    """(status, headers) of a POST whose body is still arriving, faster than the minimum body rate
    (slow_clients.py), when the service's own request timeout (`traffic.timeout`, edge.py's
    `RequestTimeout`) answers it, through every layer of the real stack."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as connection:
        connection.sendall(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nX-Request-ID: %s\r\n\r\n"
            % (path.encode(), parts.hostname.encode(), TIMED_OUT_BODY_BYTES, request_id.encode())
            + b'{"sepal_length": '
        )
        # JSON allows any amount of white space before a value: the body never ends in time.
        while not select.select([connection], [], [], TRICKLE_SECONDS)[0]:
            connection.sendall(b" " * TRICKLE_BYTES)
        response = http.client.HTTPResponse(connection)
        response.begin()
        response.read()
        return response.status, response.headers


# 8 KiB a second, far above the minimum body rate; 30 s of it still fits in the body limit.
TRICKLE_SECONDS = 0.25
TRICKLE_BYTES = 2048
TIMED_OUT_BODY_BYTES = 1_000_000


def metric_samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample a live `/metrics` serves."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
