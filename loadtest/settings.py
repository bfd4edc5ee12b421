"""The load test's defaults, read from loadtest/locust.conf: the one file that writes them.

The locustfile's own options and `python -m loadtest.run` take their defaults from here, so a
value changed in locust.conf changes every way of running the load test.
"""

from __future__ import annotations

from pathlib import Path

import configargparse

LOCUST_CONF = Path(__file__).with_name("locust.conf")


def locust_conf() -> dict[str, str]:
    """locust.conf's settings by key (`users`, `p95-limit-ms`, ...), parsed by the parser locust
    uses for it (importing locust itself would monkey-patch the caller's sockets with gevent)."""
    with LOCUST_CONF.open(encoding="utf-8") as stream:
        return dict(configargparse.DefaultConfigFileParser().parse(stream))


def conf_int(key: str) -> int:
    return int(locust_conf()[key])


def conf_float(key: str) -> float:
    return float(locust_conf()[key])
