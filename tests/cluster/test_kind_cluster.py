"""The front page's kind path on a real kind cluster: `make kind-up`, `make deploy-kind`,
`kubectl apply -k kustomize/overlays/kind` by hand, `make loadtest-kind`, then a rollout, a
rollback and a deleted pod under load. Real kubelets run the image with its probes, kube-proxy
spreads the connections, Pod Security admits the pods.

The cluster gets a name, a host port and a kubeconfig of its own, so a cluster of the user's is
left alone; `KIND_NODE_IMAGE` is `local` (the node image cluster/kind/ assembles here) unless
IRIS_TEST_KIND_NODE_IMAGE names another, e.g. empty for kind's own on a laptop.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from cluster import controlplane
from harness.processes import free_port
from tests.cluster.conftest import AVOIDED_TAINT, DEPLOYMENT, NAMESPACE, SELECTOR
from tests.conftest import REPO_ROOT, SEED_FLOWER, require

pytestmark = pytest.mark.integration

# Make's own level and flags would make messages read `make[1]:`; the tests type make afresh.
NOT_INHERITED = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "KIND_HOST_PORT", "KIND_CLUSTER")


@dataclass
class KindCluster:
    name: str
    port: int
    env: dict[str, str]
    kubectl_bin: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def make_variables(self) -> list[str]:
        return [f"KIND_CLUSTER={self.name}", f"KIND_HOST_PORT={self.port}"]

    def make(self, *targets: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        with self.log.open("a") as log:
            log.write(f"\n$ make {' '.join(targets)}\n")
        result = subprocess.run(
            ["make", *targets, *self.make_variables],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        with self.log.open("a") as log:
            log.write(result.stdout + result.stderr)
        return result

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_bin), "--context", f"kind-{self.name}", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=330,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def pods(self) -> list[dict]:
        listed = json.loads(
            self.kubectl("-n", NAMESPACE, "get", "pods", "-l", SELECTOR, "-o", "json").stdout
        )
        return [pod for pod in listed["items"] if "deletionTimestamp" not in pod["metadata"]]

    def rollout_status(self) -> None:
        self.kubectl("-n", NAMESPACE, "rollout", "status", DEPLOYMENT, "--timeout=300s")


def why_no_kind_cluster() -> str | None:
    for tool in ("docker", "make", "go", "debootstrap", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: the kind cluster cannot be built here"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine answers: the kind cluster needs one"
    return None


@pytest.fixture(scope="module")
def kind_cluster(
    trained_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KindCluster]:
    reason = why_no_kind_cluster()
    require(reason is None, reason or "")
    commands = controlplane.commands_dir()
    require(controlplane.missing_commands(commands) is None, "run make cluster-commands")
    directory = tmp_path_factory.mktemp("kind-cluster")
    env = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
    env["KUBECONFIG"] = str(directory / "kubeconfig")
    env["KIND_NODE_IMAGE"] = os.environ.get("IRIS_TEST_KIND_NODE_IMAGE", "local")
    cluster = KindCluster(
        name=f"iris-test-{secrets.token_hex(3)}",
        port=free_port(),
        env=env,
        kubectl_bin=commands / "bin" / "kubectl",
        log=directory / "make.log",
    )
    try:
        created = cluster.make("kind-up")
        assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
        cluster.kubectl("taint", "nodes", f"{cluster.name}-worker2", AVOIDED_TAINT)
        deployed = cluster.make("deploy-kind")
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        yield cluster
    finally:
        cluster.make("kind-down", timeout=300)


def classify(session: requests.Session | None, url: str) -> requests.Response:
    post = session.post if session else requests.post
    return post(f"{url}/iris/classify_iris", json=SEED_FLOWER, timeout=10)


@dataclass
class Load:
    """Two clients, one opening a connection per request and one keeping its connection, sending
    single flowers until stopped; no retry anywhere."""

    url: str
    served_by: dict[str, Counter] = field(
        default_factory=lambda: {"fresh": Counter(), "kept-alive": Counter()}
    )
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self, kind: str) -> None:
        session = requests.Session() if kind == "kept-alive" else None
        while not self.stop.is_set():
            try:
                response = classify(session, self.url)
            except requests.RequestException as exc:
                self.failures.append(f"{kind}: {exc!r}")
                continue
            if response.status_code != 200:
                self.failures.append(f"{kind}: HTTP {response.status_code} {response.text[:200]}")
                continue
            self.served_by[kind][response.headers["X-Served-By"]] += 1
            time.sleep(0.01)

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        threads = [threading.Thread(target=self.client, args=(kind,)) for kind in self.served_by]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=30)


def test_the_pods_are_ready_through_their_probes_on_both_workers_and_never_the_control_plane(
    kind_cluster: KindCluster,
) -> None:
    pods = kind_cluster.pods()
    assert len(pods) == 3
    placement = Counter(pod["spec"]["nodeName"] for pod in pods)
    assert set(placement) == {f"{kind_cluster.name}-worker", f"{kind_cluster.name}-worker2"}
    for pod in pods:
        container = pod["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"]
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] is True, pod["metadata"]["name"]
        assert "running" in status["state"], pod["metadata"]["name"]


def test_the_namespace_admits_the_pods_and_refuses_one_that_is_not_restricted(
    kind_cluster: KindCluster,
) -> None:
    namespace = json.loads(kind_cluster.kubectl("get", "namespace", NAMESPACE, "-o", "json").stdout)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert len(kind_cluster.pods()) == 3
    refused = kind_cluster.kubectl(
        "-n", NAMESPACE, "run", "not-restricted", "--image=busybox", "--dry-run=server", check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr


def test_the_seed_request_answers_through_the_service(kind_cluster: KindCluster) -> None:
    response = classify(None, kind_cluster.url)
    assert response.status_code == 200
    body = response.json()
    assert (body["class"], body["probability"]) == ("setosa", 0.99)
    assert response.headers["X-Served-By"] in {
        pod["metadata"]["name"] for pod in kind_cluster.pods()
    }


def test_the_load_test_passes_its_gates_through_kube_proxy(kind_cluster: KindCluster) -> None:
    result = kind_cluster.make("loadtest-kind", timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "[PASS] balance" in output, output[-4000:]
    assert "Load test gates passed" in output


def test_the_overlay_applied_by_hand_after_kind_load_rolls_out(kind_cluster: KindCluster) -> None:
    """`kubectl apply -k kustomize/overlays/kind`, as the front page types it: the overlay names
    iris-classifier:<version>, which make kind-load put on the nodes."""
    kind_cluster.kubectl("apply", "-k", str(REPO_ROOT / "kustomize" / "overlays" / "kind"))
    kind_cluster.rollout_status()
    images = {pod["spec"]["containers"][0]["image"] for pod in kind_cluster.pods()}
    assert len(images) == 1
    assert images.pop().count(":") == 1


def test_a_new_image_rolls_out_and_back_with_no_failed_request(kind_cluster: KindCluster) -> None:
    before = kind_cluster.pods()[0]["spec"]["containers"][0]["image"]
    new_image = f"iris-classifier:rollout-{secrets.token_hex(3)}"
    subprocess.run(["docker", "tag", before, new_image], check=True)
    loaded = subprocess.run(
        [
            str(REPO_ROOT / "cluster" / "kind" / "kind"),
            "load",
            "docker-image",
            new_image,
            "--name",
            kind_cluster.name,
        ],
        env=kind_cluster.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    load = Load(kind_cluster.url)
    try:
        with load.running():
            time.sleep(2)
            kind_cluster.kubectl(
                "-n", NAMESPACE, "set", "image", DEPLOYMENT, f"iris-classifier={new_image}"
            )
            kind_cluster.rollout_status()
            rolled = {pod["spec"]["containers"][0]["image"] for pod in kind_cluster.pods()}
            time.sleep(2)
            kind_cluster.kubectl("-n", NAMESPACE, "rollout", "undo", DEPLOYMENT)
            kind_cluster.rollout_status()
            time.sleep(2)
    finally:
        subprocess.run(["docker", "rmi", new_image], capture_output=True, check=False)
    assert rolled == {new_image}
    assert {pod["spec"]["containers"][0]["image"] for pod in kind_cluster.pods()} == {before}
    assert load.failures == []
    for kind, served in load.served_by.items():
        assert sum(served.values()) > 50, (kind, served)
    # Both clients met pods of every ReplicaSet: the old one, the new one, the old one again.
    assert len(set(load.served_by["fresh"])) >= 6, load.served_by["fresh"]
    assert len(set(load.served_by["kept-alive"])) >= 2, load.served_by["kept-alive"]


def test_a_pod_deleted_under_load_is_replaced_without_a_failed_request(
    kind_cluster: KindCluster,
) -> None:
    victim = kind_cluster.pods()[0]["metadata"]["name"]
    load = Load(kind_cluster.url)
    with load.running():
        time.sleep(2)
        kind_cluster.kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=true")
        kind_cluster.kubectl(
            "-n", NAMESPACE, "wait", "--for=condition=Available", DEPLOYMENT, "--timeout=120s"
        )
        kind_cluster.rollout_status()
        time.sleep(2)
    pods = kind_cluster.pods()
    assert victim not in {pod["metadata"]["name"] for pod in pods}
    assert len(pods) == 3
    assert load.failures == []
    assert sum(load.served_by["fresh"].values()) > 50
