"""The container image: built once per run with `make image`, then run hardened as Kubernetes
runs it (read-only root, uid 1034, no capabilities) and checked from outside.

Without a Docker engine these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import ast
import http.client
import json
import re
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from harness import deployment
from harness.containers import (
    Container,
    docker,
    hardened_container,
    image_size_bytes,
    start_hardened,
)
from harness.deployment import base_deployment, pod_spec
from harness.processes import wait_http_ok
from iris_classifier.flowers import CLASS_NAMES
from iris_classifier.serving.config import MAX_BATCH_ROWS
from tests.conftest import REPO_ROOT, SEED_FLOWER
from tests.support import kserve_client

BENTOFILE = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
# The image's own user must be the one the Deployment runs it as.
IMAGE_UID = str(pod_spec(base_deployment())["securityContext"]["runAsUser"])
POD_NAME = "image-test-pod-7"
# The size `make image-stats` last printed (image/README.md), plus room for patch releases of
# the locked packages that any sizeable dependency (scikit-learn, SciPy) would exceed.
MEASURED_IMAGE_BYTES = 355_749_917
IMAGE_SIZE_MARGIN = 0.10
MAX_IMAGE_BYTES = int(MEASURED_IMAGE_BYTES * (1 + IMAGE_SIZE_MARGIN))
# After the Deployment's grace period the kubelet sends SIGKILL.
GRACE_PERIOD_S = float(pod_spec(base_deployment())["terminationGracePeriodSeconds"])


def local_modules_imported_by(path: Path) -> set[Path]:
    """Repository files that `path` imports, directly or through other repository files."""
    seen: set[Path] = set()
    pending = [path]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in ast.walk(ast.parse(current.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                base = REPO_ROOT.joinpath(*name.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file():
                        pending.append(candidate)
                        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
                        for parent in candidate.relative_to(REPO_ROOT).parents:
                            init = REPO_ROOT / parent / "__init__.py"
                            if parent != Path(".") and init.is_file():
                                pending.append(init)
    return seen


def test_bentofile_includes_every_repository_module_the_service_imports() -> None:
    service_file = REPO_ROOT / BENTOFILE["service"].split(":")[0].replace(".", "/")
    needed = {
        str(p.relative_to(REPO_ROOT))
        for p in local_modules_imported_by(service_file.with_suffix(".py"))
    }
    included = BENTOFILE["include"]
    # A folder entry ("iris_classifier/serving/") packs the whole package.
    folders = tuple(entry for entry in included if entry.endswith("/"))
    assert {
        path for path in needed if path not in included and not path.startswith(folders)
    } == set()


def test_bentofile_include_list_is_explicit() -> None:
    assert not [entry for entry in BENTOFILE["include"] if any(c in entry for c in "*?[")]


# Dependencies of pyproject.toml that only `train.py` uses: they stay out of the image.
TRAINING_ONLY = {"scikit-learn", "pandas", "matplotlib", "skl2onnx", "onnx"}


def test_bentofile_pins_match_pyproject() -> None:
    def pins(requirements: list[str]) -> dict[str, str]:
        pairs = (re.split(r"==", requirement.split(";")[0].strip()) for requirement in requirements)
        return {name.lower(): version for name, version in pairs}

    image_pins = pins(BENTOFILE["python"]["packages"])
    project_pins = pins(PYPROJECT["project"]["dependencies"])
    assert all(len(r.split("==")) == 2 for r in BENTOFILE["python"]["packages"])
    shared = image_pins.keys() & project_pins.keys()
    assert project_pins.keys() - TRAINING_ONLY <= image_pins.keys()
    assert not TRAINING_ONLY & image_pins.keys()
    assert {name: image_pins[name] for name in shared} == {
        name: project_pins[name] for name in shared
    }


# --- The built image ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def container(service_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    log_path = tmp_path_factory.mktemp("image") / "container.log"
    with hardened_container(
        service_image, log_path=log_path, env={"POD_NAME": POD_NAME}
    ) as running:
        yield running


def call(url: str, body: object | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one GET, or POST when `body` is given; 4xx and 5xx included."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.integration
def test_make_image_tags_the_project_version(service_image: str) -> None:
    labels = json.loads(
        docker("image", "inspect", "--format", "{{json .Config.Labels}}", service_image)
    )
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")


@pytest.mark.integration
def test_image_stays_within_its_measured_size_and_margin(service_image: str) -> None:
    size = image_size_bytes(service_image)
    assert size <= MAX_IMAGE_BYTES, f"{size:,} bytes, limit {MAX_IMAGE_BYTES:,}"


@pytest.mark.integration
def test_image_serves_onnx_without_training_packages_or_pickles(service_image: str) -> None:
    probe = (
        "import importlib.util as u, pathlib as p; "
        "print(sorted(m for m in ('onnxruntime', 'sklearn', 'scipy', 'pandas', 'matplotlib', "
        "'skl2onnx', 'onnx', 'joblib') if u.find_spec(m))); "
        "print(sorted(f.name for f in p.Path('/home/bentoml/bento/models').rglob('*') "
        "if f.is_file() and f.name != 'latest'))"  # `latest`: BentoML's tag pointer file
    )
    found = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", service_image, "-c", probe
    ).splitlines()
    assert found[0] == "['onnxruntime']"
    assert found[1] == "['model.onnx', 'model.yaml']"


@pytest.mark.integration
def test_image_runs_as_the_deployments_uid_by_default(service_image: str) -> None:
    # Without --user: what a pod without runAsUser would get.
    uid = docker("run", "--rm", "--network", "none", "--entrypoint", "id", service_image, "-u")
    assert uid == IMAGE_UID


@pytest.mark.integration
def test_hardened_container_serves_as_non_root(container: Container) -> None:
    assert docker("exec", container.name, "id", "-u") == IMAGE_UID
    pid1_uid = docker("exec", container.name, "awk", "/^Uid:/ {print $2}", "/proc/1/status")
    assert pid1_uid == IMAGE_UID


@pytest.mark.integration
def test_root_filesystem_is_read_only(container: Container) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        docker("exec", container.name, "touch", "/home/bentoml/bento/written")


@pytest.mark.integration
def test_seed_request_gets_the_seed_answer(container: Container) -> None:
    status, _, body = call(f"{container.url}/iris/classify_iris", SEED_FLOWER)
    assert status == 200
    answer = json.loads(body)
    assert (answer["class"], answer["probability"]) == ("setosa", 0.99)
    assert set(answer["probabilities"]) == set(CLASS_NAMES)
    assert answer["model_version"].startswith("iris_classifier:")


@pytest.mark.integration
def test_triton_client_talks_to_the_container_in_json_and_binary(container: Container) -> None:
    import numpy as np
    import tritonclient.http as triton

    client = triton.InferenceServerClient(container.url.removeprefix("http://"))
    try:
        assert client.is_server_ready()
        server = client.get_server_metadata()
        assert "binary_tensor_data" in server["extensions"]
        assert server["version"] == PYPROJECT["project"]["version"]
        flowers = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
        for binary in (False, True):
            tensor = triton.InferInput("flowers", list(flowers.shape), "FP32")
            tensor.set_data_from_numpy(flowers, binary_data=binary)
            outputs = [
                triton.InferRequestedOutput(name, binary_data=binary)
                for name in ("probabilities", "label")
            ]
            result = client.infer("iris_classifier", [tensor], outputs=outputs)
            labels = [
                label.decode() if isinstance(label, bytes) else label
                for label in result.as_numpy("label")
            ]
            assert labels == ["setosa", "virginica"], binary
            np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1, atol=1e-5)
    finally:
        client.close()


@pytest.mark.integration
def test_kserve_client_talks_to_the_container(container: Container) -> None:
    """KServe's Python client, in build/kserve-venv (tests/support/kserve_sdk.py)."""
    report = kserve_client.observe(container.url)
    assert kserve_client.problems(report, kserve_client.single_flower_answers(container.url)) == []


@pytest.mark.integration
def test_api_page_and_document_name_the_project_version_and_model(container: Container) -> None:
    # In a Bento, BentoML describes the service with its own README (badges, help links).
    status, _, page = call(f"{container.url}/")
    assert status == 200
    _, _, served = call(f"{container.url}/iris/model")
    assert f'<span class="version">version {VERSION}</span>' in page.decode()
    assert f"<dd>{json.loads(served)['model_version']}</dd>" in page.decode()
    assert "BentoML" not in page.decode()
    _, _, document = call(f"{container.url}/docs.json")
    info = json.loads(document)["info"]
    assert (info["title"], info["version"]) == (PYPROJECT["project"]["name"], VERSION)
    assert "BentoML" not in json.dumps(info)


@pytest.mark.integration
def test_seed_healthcheck_answers(container: Container) -> None:
    status, _, body = call(f"{container.url}/healthcheck")
    assert (status, json.loads(body)) == (200, "Iris classifier is ready!")


@pytest.mark.integration
def test_bad_input_gets_a_4xx_with_json_error(container: Container) -> None:
    status, _, body = call(
        f"{container.url}/iris/classify_iris", {**SEED_FLOWER, "petal_width": -1}
    )
    assert 400 <= status < 500
    assert "error" in json.loads(body)


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/readyz", "/livez"])
def test_probes_answer_200(container: Container, path: str) -> None:
    assert call(f"{container.url}{path}")[0] == 200


@pytest.mark.integration
def test_metrics_count_requests(container: Container) -> None:
    call(f"{container.url}/iris/classify_iris", SEED_FLOWER)
    status, _, body = call(f"{container.url}/metrics")
    assert status == 200
    assert re.search(
        r'^bentoml_service_request_total\{.*endpoint="/iris/classify_iris"', body.decode(), re.M
    )


@pytest.mark.integration
def test_x_served_by_is_the_pod_name(container: Container) -> None:
    _, headers, _ = call(f"{container.url}/iris/classify_iris", SEED_FLOWER)
    assert {k.lower(): v for k, v in headers.items()}["x-served-by"] == POD_NAME


# --- Trust store and build leftovers -----------------------------------------------------------

# Run inside the image: the certificates /etc/ca-certificates.conf enables (plus local ones in
# /usr/local/share/ca-certificates, which update-ca-certificates adds too), and those each trust
# store holds, as SHA-256 fingerprints; and the environment of the service's first process.
TRUST_PROBE = r"""
import glob, hashlib, json, os, ssl

BEGIN, END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"

def read(path):
    with open(path, "rb") as file:  # file names in ca-certificates.conf are UTF-8 bytes
        return file.read().decode("ascii", errors="replace")

def fingerprints(path):
    blocks = [part[part.index(BEGIN):] + END + "\n" for part in read(path).split(END) if BEGIN in part]
    return [hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest() for block in blocks]

enabled = []
with open("/etc/ca-certificates.conf", "rb") as conf:
    for line in conf.read().splitlines():
        line = line.strip()
        if line and not line.startswith((b"#", b"!")):
            enabled += fingerprints(b"/usr/share/ca-certificates/" + line)
for path in glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True):
    enabled += fingerprints(path)

capath = ssl.get_default_verify_paths().capath
context = ssl.create_default_context()
stores = {
    "python default context": [
        hashlib.sha256(der).hexdigest() for der in context.get_ca_certs(binary_form=True)
    ],
    "openssl capath": [
        fingerprint
        for path in glob.glob(os.path.join(capath, "*"))
        if os.path.isfile(path) and BEGIN in read(path)
        for fingerprint in fingerprints(path)
    ],
}
try:
    import certifi
    stores["certifi"] = fingerprints(certifi.where())
except ImportError:
    pass
environ = [item.split("=", 1)[0] for item in read("/proc/1/environ").split("\0") if item]
print(json.dumps({"enabled": enabled, "stores": stores, "environ": environ}))
"""

# Settings that only the build stage may carry: CA overrides and package-installer settings.
BUILD_ONLY_VARIABLES = re.compile(
    r"^(SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|PIP_.*|UV_.*)$"
)


@pytest.mark.integration
def test_running_image_trusts_exactly_what_ca_certificates_enables(container: Container) -> None:
    probe = json.loads(docker("exec", container.name, "python3", "-c", TRUST_PROBE))
    assert len(probe["enabled"]) > 100, "ca-certificates enables Debian's CAs"
    for store, trusted in probe["stores"].items():
        assert set(trusted) == set(probe["enabled"]), f"{store} differs from ca-certificates"
    assert not [name for name in probe["environ"] if BUILD_ONLY_VARIABLES.match(name)]


# Run as root inside the image: every path where a build-only tool or cache would be.
LEFTOVERS_PROBE = r"""
import json, os
found = []
for directory, subdirectories, files in os.walk("/"):
    if directory in ("/proc", "/sys", "/dev"):
        subdirectories[:] = []
        continue
    for name in files + subdirectories:
        path = os.path.join(directory, name)
        if name in ("uv", "uvx", "build-host-ca.crt") or (
            os.path.basename(directory) == ".cache" and name in ("pip", "uv")
        ):
            found.append(path)
print(json.dumps(found))
"""


@pytest.mark.integration
def test_image_holds_no_build_only_tools_caches_or_settings(service_image: str) -> None:
    leftovers = json.loads(
        docker(
            *("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "python3"),
            *(service_image, "-c", LEFTOVERS_PROBE),
        )
    )
    assert leftovers == []
    environment = json.loads(
        docker("image", "inspect", "--format", "{{json .Config.Env}}", service_image)
    )
    names = [entry.split("=", 1)[0] for entry in environment]
    assert not [name for name in names if BUILD_ONLY_VARIABLES.match(name)], environment


# --- SIGTERM drain ------------------------------------------------------------------------------

BATCH = {"flowers": [SEED_FLOWER] * MAX_BATCH_ROWS}
LOAD_THREADS = 8
LOAD_SECONDS = 3
# Time for the server to read the headers of every last request before SIGTERM is sent.
HEADERS_READ_SECONDS = 1.5


@dataclass
class DrainLoad:
    """Keep-alive clients that send batches until told to stop, then one last batch each.

    A last batch is sent in two parts: the headers and half the body, then, after SIGTERM,
    the rest. The server has begun each of those requests before SIGTERM and can only finish
    it after, so a server that drains answers all of them and one that does not fails some.
    The clients open no new connection after SIGTERM, as Kubernetes stops routing to a
    terminating pod.
    """

    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    sigterm_sent: threading.Event = field(default_factory=threading.Event)
    last_started: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    answered: list[tuple[bool, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def client(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        body = json.dumps(BATCH).encode()
        last = False
        try:
            while not last:
                last = self.stop.is_set()
                connection.putrequest("POST", "/iris/classify_batch")
                connection.putheader("Content-Type", "application/json")
                connection.putheader("Content-Length", str(len(body)))
                if last:
                    connection.endheaders(body[: len(body) // 2])
                    self.last_started.release()
                    self.sigterm_sent.wait(timeout=60)
                    connection.send(body[len(body) // 2 :])
                else:
                    connection.endheaders(body)
                response = connection.getresponse()
                payload = response.read()
                if (
                    response.status != 200
                    or len(json.loads(payload)["predictions"]) != MAX_BATCH_ROWS
                ):
                    self.failures.append(f"HTTP {response.status}: {payload[:200]!r}")
                self.answered.append((last, time.monotonic()))
        except Exception as error:  # every way a request can fail counts
            self.failures.append(f"{'last' if last else 'load'} request: {error!r}")
            if not last:
                self.last_started.release()
        finally:
            connection.close()


@dataclass
class DrainOutcome:
    load: DrainLoad
    signal_at: float
    exit_code: int
    logs: str

    def last_batches_answered_after_the_signal(self) -> int:
        return sum(last and at > self.signal_at for last, at in self.load.answered)


def stop_under_load(image: str, log_path: Path, signal: str) -> DrainOutcome:
    """Run `image` under DrainLoad and send `signal` while every client's last batch is half sent."""
    drained = start_hardened(image, log_path=log_path, env=deployment_env("drain"))
    load = DrainLoad(drained.port)
    try:
        wait_http_ok(f"{drained.url}/readyz", timeout=90, process=drained.process)
        clients = [threading.Thread(target=load.client) for _ in range(LOAD_THREADS)]
        for client in clients:
            client.start()
        time.sleep(LOAD_SECONDS)
        load.stop.set()
        for _ in clients:
            assert load.last_started.acquire(timeout=60), "a client never began its last batch"
        time.sleep(HEADERS_READ_SECONDS)
        signal_at = time.monotonic()
        docker("kill", "--signal", signal, drained.name)
        load.sigterm_sent.set()
        for client in clients:
            client.join(timeout=GRACE_PERIOD_S)
        exit_code = drained.wait_exit(timeout=GRACE_PERIOD_S)
        return DrainOutcome(load, signal_at, exit_code, drained.logs()[-3000:])
    finally:
        load.sigterm_sent.set()  # no client may wait for it forever
        drained.remove()


@pytest.mark.integration
def test_sigterm_drains_requests_in_flight_and_exits_zero(
    service_image: str, tmp_path: Path
) -> None:
    outcome = stop_under_load(service_image, tmp_path / "drain.log", "TERM")
    assert outcome.load.failures == [], outcome.logs
    assert outcome.last_batches_answered_after_the_signal() == LOAD_THREADS
    assert len(outcome.load.answered) > LOAD_THREADS, "no load before SIGTERM"
    assert outcome.exit_code == 0, outcome.logs


@pytest.mark.integration
def test_sigkill_instead_loses_every_request_in_flight(service_image: str, tmp_path: Path) -> None:
    """The control for the drain test: the same load stopped by SIGKILL, which the kubelet sends
    once the grace period is over, must fail all the last batches, or the drain test could not
    tell draining from not draining."""
    outcome = stop_under_load(service_image, tmp_path / "kill.log", "KILL")
    assert len(outcome.load.answered) > LOAD_THREADS, "no load before SIGKILL"
    assert outcome.last_batches_answered_after_the_signal() == 0
    last_failures = [failure for failure in outcome.load.failures if failure.startswith("last")]
    assert len(last_failures) == LOAD_THREADS, outcome.load.failures
    assert outcome.exit_code == 137


# --- The drain the Deployment configures ----------------------------------------------------------


def deployment_env(pod_name: str, **overrides: str) -> dict[str, str]:
    """The service container's environment as the base Deployment sets it (its drain among it),
    with the pod name the downward API would fill in."""
    env = {
        variable["name"]: str(variable["value"])
        for variable in deployment.container(base_deployment(), deployment.CONTAINER_NAME)["env"]
        if "value" in variable
    }
    return {**env, "POD_NAME": pod_name, **overrides}


DEPLOYMENT_DRAIN_S = float(deployment_env("any")["IRIS_DRAIN_SECONDS"])
KEPT_ALIVE_CLIENTS = 3
# Paths a balancer or the kubelet probes during the drain.
READINESS_PATHS = ("/readyz", "/v2/health/ready")
# How long the drain may take to begin after SIGTERM: the arbiter relays the signal to its worker.
DRAIN_START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer (refused, reset, closed)
    connection: str  # the Connection header, "" without one
    at_s: float  # seconds after SIGTERM the request was sent

    @classmethod
    def of(cls, connection: http.client.HTTPConnection, method: str, path: str, at_s: float):
        body = json.dumps(SEED_FLOWER).encode() if method == "POST" else None
        try:
            connection.request(method, path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            return cls(0, "", at_s)
        return cls(response.status, (response.getheader("Connection") or "").lower(), at_s)


@dataclass
class DrainObservation:
    """What clients saw of one replica from just before SIGTERM until it exited."""

    before: dict[str, Answer] = field(default_factory=dict)  # by path, fresh connections
    kept_alive_before: list[Answer] = field(default_factory=list)
    during: dict[str, Answer] = field(default_factory=dict)  # by path, once the drain began
    kept_alive_after: list[Answer] = field(default_factory=list)
    fresh: list[Answer] = field(default_factory=list)  # new connections until the drain's end
    exit_code: int | None = None
    exited_after_s: float = 0.0
    logs: str = ""


def fresh_answer(port: int, method: str, path: str, at_s: float) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        return Answer.of(connection, method, path, at_s)
    finally:
        connection.close()


def observe_stop(image: str, log_path: Path, drain_seconds: float) -> DrainObservation:
    """Run `image` with the Deployment's environment and `drain_seconds`, SIGTERM it, and
    record what kept-alive and new clients get until it exits."""
    seen = DrainObservation()
    stopped = start_hardened(
        image,
        log_path=log_path,
        env=deployment_env("drain-observed", IRIS_DRAIN_SECONDS=f"{drain_seconds:g}"),
    )
    kept = [
        http.client.HTTPConnection("127.0.0.1", stopped.port, timeout=10)
        for _ in range(KEPT_ALIVE_CLIENTS)
    ]
    try:
        wait_http_ok(f"{stopped.url}/readyz", timeout=90, process=stopped.process)
        for path in (*READINESS_PATHS, "/livez"):
            seen.before[path] = fresh_answer(stopped.port, "GET", path, 0.0)
        seen.kept_alive_before = [
            Answer.of(connection, "POST", "/iris/classify_iris", 0.0) for connection in kept
        ]
        signal_at = time.monotonic()
        docker("kill", "--signal", "TERM", stopped.name)

        def since() -> float:
            return time.monotonic() - signal_at

        # The drain has begun once /readyz stops answering 200; without a drain it stops
        # answering at all.
        readiness = fresh_answer(stopped.port, "GET", "/readyz", since())
        while readiness.status == 200 and since() < DRAIN_START_TIMEOUT_S:
            time.sleep(0.05)
            readiness = fresh_answer(stopped.port, "GET", "/readyz", since())
        seen.during["/readyz"] = readiness
        # The kept-alive connections first: they were last used just before SIGTERM, and the
        # server closes a connection idle for its keep-alive timeout (uvicorn's 5 s).
        seen.kept_alive_after = [
            Answer.of(connection, "POST", "/iris/classify_iris", since()) for connection in kept
        ]
        for path in (*READINESS_PATHS[1:], "/livez"):
            seen.during[path] = fresh_answer(stopped.port, "GET", path, since())
        # New connections, as balancers that have not heard of the stop still open them, once
        # a second until shortly before the drain ends (and at least once).
        while True:
            seen.fresh.append(fresh_answer(stopped.port, "POST", "/iris/classify_iris", since()))
            if since() + 1.0 > drain_seconds - 1.0:
                break
            time.sleep(1.0)
        seen.exit_code = stopped.wait_exit(timeout=GRACE_PERIOD_S)
        seen.exited_after_s = since()
        return seen
    finally:
        for connection in kept:
            connection.close()
        seen.logs = stopped.logs()[-3000:]
        stopped.remove()


@pytest.mark.integration
def test_sigterm_drains_as_the_deployment_says_then_exits_zero(
    service_image: str, tmp_path: Path
) -> None:
    """With the Deployment's drain: readiness 503 at once (liveness stays 200), every kept-alive
    client told `Connection: close` on a complete answer, new connections served until the
    drain ends, then a clean exit inside the grace period."""
    assert DEPLOYMENT_DRAIN_S >= 5, "the Deployment's drain is too short to observe"
    seen = observe_stop(service_image, tmp_path / "drain.log", DEPLOYMENT_DRAIN_S)
    assert {path: answer.status for path, answer in seen.before.items()} == {
        "/readyz": 200,
        "/v2/health/ready": 200,
        "/livez": 200,
    }
    assert [(a.status, a.connection) for a in seen.kept_alive_before] == [
        (200, "")
    ] * KEPT_ALIVE_CLIENTS, "kept-alive answers before SIGTERM must keep the connection"

    assert {path: answer.status for path, answer in seen.during.items()} == {
        "/readyz": 503,
        "/v2/health/ready": 503,
        "/livez": 200,
    }, seen.logs
    assert [(a.status, a.connection) for a in seen.kept_alive_after] == [
        (200, "close")
    ] * KEPT_ALIVE_CLIENTS, seen.logs
    assert [answer.status for answer in seen.fresh] == [200] * len(seen.fresh), seen.logs
    assert {answer.connection for answer in seen.fresh} == {"close"}
    # Served on new connections until the last second of the drain.
    assert seen.fresh[-1].at_s >= DEPLOYMENT_DRAIN_S - 2.5, seen.fresh
    assert seen.exit_code == 0, seen.logs
    assert DEPLOYMENT_DRAIN_S <= seen.exited_after_s < GRACE_PERIOD_S, seen.exited_after_s


@pytest.mark.integration
def test_without_a_drain_sigterm_turns_away_what_the_drain_serves(
    service_image: str, tmp_path: Path
) -> None:
    """The control for the drain test: the same observation with IRIS_DRAIN_SECONDS=0, where
    the server stops accepting and closes idle kept-alive connections at SIGTERM, must fail
    what the drain test requires, or that test could not tell draining from not draining."""
    seen = observe_stop(service_image, tmp_path / "no-drain.log", 0.0)
    assert [(a.status, a.connection) for a in seen.kept_alive_before] == [
        (200, "")
    ] * KEPT_ALIVE_CLIENTS
    assert seen.during["/readyz"].status != 503
    assert all(answer.status != 200 for answer in seen.kept_alive_after), seen.kept_alive_after
    assert all(answer.status != 200 for answer in seen.fresh), seen.fresh
    assert seen.exit_code == 0, seen.logs
    assert seen.exited_after_s < DEPLOYMENT_DRAIN_S
