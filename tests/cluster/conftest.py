"""One control plane for the cluster tests, built from the commands `make cluster-commands`
builds; without them the tests skip, except under CI=true, where they fail."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import controlplane
from tests.conftest import require

# What the kind overlay creates, as both its cluster tests (kwok's nodes and kind's) look it up.
NAMESPACE = "iris-classifier"
DEPLOYMENT = "deployment/iris-classifier"
SELECTOR = "app.kubernetes.io/name=iris-classifier,app.kubernetes.io/instance=iris-classifier"
# The scheduler's own scoring spreads pods over identical nodes anyway; a worker it would rather
# avoid makes it pile them onto the other one, unless the overlay's spread constraint forbids.
AVOIDED_TAINT = "iris-classifier.test/avoid=true:PreferNoSchedule"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """etcd, the API server, the controller manager and the scheduler, with kwok's three nodes
    and every CRD the overlays need installed."""
    directory = tmp_path_factory.mktemp("control-plane")
    with running_with_crds(directory, nodes=True) as plane:
        yield plane


@contextlib.contextmanager
def running_with_crds(directory: Path, *, nodes: bool) -> Iterator[controlplane.ControlPlane]:
    """A control plane in `directory` with every CRD the overlays need installed."""
    commands = controlplane.commands_dir()
    reason = controlplane.missing_commands(commands)
    require(reason is None, reason or "")
    with controlplane.running(directory, commands, nodes=nodes) as plane:
        plane.kubectl("apply", "--server-side", "-f", str(commands / "crds"), timeout=300)
        plane.kubectl(
            "wait", "--for=condition=Established", "crd", "--all", "--timeout=120s", timeout=130
        )
        yield plane
