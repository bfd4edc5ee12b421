"""Real 5xx answers from a live `bentoml serve`, and its metrics read as samples."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


def timed_out_request(url: str, path: str = "/iris/classify_iris", request_id: str = "slow-1"):
    """(status, headers) of a POST whose body never arrives in full: the service's own request
    timeout (`traffic.timeout`, edge.py's `RequestTimeout`) answers it, through every layer of the real stack."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", "1000")
        connection.putheader("X-Request-ID", request_id)
        connection.endheaders(b'{"sepal_length": ')
        response = connection.getresponse()
        response.read()
        return response.status, response.headers
    finally:
        connection.close()


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
