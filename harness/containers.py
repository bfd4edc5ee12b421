"""The one way to run the service image hardened as Kubernetes runs it.

The hardening is read from the Deployment's pod spec, never written here: its user, a
read-only root with a tmpfs for each emptyDir mount, no capabilities, no privilege escalation.
The image tests, the load test, `make run-image`, image/stats.py and the pod emulation all
start containers through `docker_run_command`. Host networking because the Docker engine here
runs without a bridge; the server binds 127.0.0.1 on a free port, so nothing outside this
machine can reach it.

    python -m harness.containers iris-classifier:0.1.0 --port 3000   # or: make run-image
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import cli, deployment
from harness.cgroups import cgroup_cpu_seconds
from harness.deployment import Manifest
from harness.processes import REPO_ROOT, free_port, on_free_port, start, wait_http_ok

logger = logging.getLogger(__name__)

# The image the Deployment names and `make image` builds (the Makefile's IMAGE).
IMAGE_NAME = "iris-classifier"


def project_image() -> str:
    """This version's image as `make image` tags it: iris-classifier:<pyproject version>."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return f"{IMAGE_NAME}:{project['version']}"


def hardening_flags(pod: Manifest, container_name: str = deployment.CONTAINER_NAME) -> list[str]:
    """`docker run` flags for the hardening a Deployment's pod spec gives its container."""
    spec = deployment.pod_spec(pod)
    app = deployment.container(pod, container_name)
    security = {**spec.get("securityContext", {}), **app.get("securityContext", {})}
    flags: list[str] = []
    if "runAsUser" in security:
        flags += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', 0)}"]
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    for capability in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", capability]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if security.get("seccompProfile", {}).get("type") not in (None, "RuntimeDefault"):
        raise ValueError("only the runtime's default seccomp profile can be reproduced")

    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in app.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" not in volume:
            raise ValueError(f"volume {mount['name']} is not an emptyDir")
        size = volume["emptyDir"].get("sizeLimit")
        options = f",tmpfs-size={int(deployment.quantity(size))}" if size else ""
        flags += ["--mount", f"type=tmpfs,destination={mount['mountPath']}{options}"]
    return flags


def docker_run_command(
    image: str,
    *,
    name: str,
    flags: Sequence[str],
    network: str = "host",
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    detach: bool = False,
    remove: bool = False,
    server_args: Sequence[str] = (),
) -> list[str]:
    """argv of the `docker run` that starts one container of the service image."""
    return [
        "docker",
        "run",
        *(["--detach"] if detach else []),
        *(["--rm"] if remove else []),
        *("--name", name),
        *(flag for key, value in (labels or {}).items() for flag in ("--label", f"{key}={value}")),
        *flags,
        *("--network", network),
        *(flag for key, value in (env or {}).items() for flag in ("--env", f"{key}={value}")),
        image,
        *server_args,
    ]


def hardened_command(
    image: str,
    *,
    name: str,
    port: int,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    detach: bool = False,
    remove: bool = False,
) -> list[str]:
    """argv that runs `image` hardened as the base Deployment says, on 127.0.0.1:`port`."""
    return docker_run_command(
        image,
        name=name,
        flags=hardening_flags(deployment.base_deployment()),
        env=env,
        labels=labels,
        detach=detach,
        remove=remove,
        server_args=("--host", "127.0.0.1", "--port", str(port)),
    )


def docker_unavailable_reason() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        probe = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 20 s"
    if probe.returncode != 0:
        return f"no Docker engine answers: {probe.stderr.strip() or probe.stdout.strip()}"
    return None


def docker(*args: str, timeout: float | None = 60, stdin: str | None = None) -> str:
    """stdout of one docker command; raises CalledProcessError (with stderr) on failure."""
    result = subprocess.run(
        ["docker", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, result.args, result.stdout, result.stderr
        )
    return result.stdout.strip()


def image_present(image: str) -> bool:
    """True when a Docker engine answers and holds `image`."""
    try:
        docker("image", "inspect", image, timeout=20)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError):
        return False
    return True


def container_logs(name: str, *, tail: int | None = None) -> str:
    """What the container wrote to stdout and stderr (empty when it is gone)."""
    limit = ["--tail", str(tail)] if tail is not None else []
    result = subprocess.run(
        ["docker", "logs", *limit, name], capture_output=True, text=True, timeout=60, check=False
    )
    return result.stdout + result.stderr if result.returncode == 0 else ""


@dataclass
class Container:
    """One container of the service image, started attached so its exit is observable."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_exit(self, timeout: float) -> int:
        """Exit code of the container, waiting at most `timeout` seconds for it to stop."""
        return self.process.wait(timeout=timeout)

    def remove(self) -> None:
        """Remove the container whatever its state; the attached docker CLI then exits."""
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            docker("rm", "--force", self.name, timeout=60)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_hardened(
    image: str,
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    name_prefix: str = "iris-classifier",
    port: int | None = None,
) -> Container:
    """Start `image` hardened on loopback `port` (a free one if None); the caller must
    `remove()` it. `hardened_container` also waits until it is ready, and starts it again on
    another port if the free one is taken before the server binds it."""
    port = port or free_port()
    name = f"{name_prefix}-{uuid.uuid4().hex[:10]}"
    command = hardened_command(image, name=name, port=port, env=env)
    logger.debug("starting %s", " ".join(command))
    return Container(
        name=name, port=port, process=start(command, log_path=log_path), log_path=log_path
    )


@contextlib.contextmanager
def hardened_container(
    image: str,
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 90,
) -> Iterator[Container]:
    """A ready hardened container (its /readyz answered 200), always removed afterwards."""

    def ready_on(port: int) -> contextlib.AbstractContextManager[tuple[Container, float]]:
        return _ready_container(image, port, log_path=log_path, env=env, timeout=ready_timeout)

    with on_free_port(ready_on) as ((container, _), _):
        yield container


@contextlib.contextmanager
def _ready_container(
    image: str, port: int, *, log_path: Path, env: Mapping[str, str] | None, timeout: float
) -> Iterator[tuple[Container, float]]:
    """(container, seconds from `docker run` to its first 200 from /readyz) on `port`."""
    started = time.monotonic()
    container = start_hardened(image, log_path=log_path, env=env, port=port)
    try:
        try:
            wait_http_ok(f"{container.url}/readyz", timeout=timeout, process=container.process)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}\n--- container log ---\n{container.logs()}") from error
        yield container, time.monotonic() - started
    finally:
        container.remove()


@dataclass(frozen=True)
class ColdStart:
    seconds: float
    # CPU time the container used until ready: the part of a cold start that load elsewhere
    # on the machine does not stretch. None where the cgroup cannot be read.
    cpu_seconds: float | None


def container_cpu_seconds(name: str) -> float | None:
    """CPU seconds a running container has used so far, read from the cgroup its main process
    is in (whatever the cgroup version and the engine's cgroup driver); None where the engine's
    processes are not visible from here."""
    container_id, pid = docker("inspect", "--format", "{{.Id}} {{.State.Pid}}", name).split()
    if pid == "0":  # not running
        return None
    return cgroup_cpu_seconds(int(pid), must_contain=container_id)


def cold_start(image: str, *, log_path: Path, env: Mapping[str, str] | None = None) -> ColdStart:
    """Time from `docker run` to the first 200 from /readyz, for one fresh container."""

    def ready_on(port: int) -> contextlib.AbstractContextManager[tuple[Container, float]]:
        return _ready_container(image, port, log_path=log_path, env=env, timeout=120)

    with on_free_port(ready_on) as ((container, seconds), _):
        return ColdStart(seconds=seconds, cpu_seconds=container_cpu_seconds(container.name))


def image_size_bytes(image: str) -> int:
    """Uncompressed size of `image` as `docker image inspect` reports it."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", image))


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("harness.containers", __doc__.splitlines()[0])
    parser.add_argument("image", help="image reference, e.g. iris-classifier:0.1.0")
    parser.add_argument("--port", type=int, default=3000, help="port on 127.0.0.1")
    args = parser.parse_args(argv)
    name = f"iris-classifier-{uuid.uuid4().hex[:10]}"
    command = hardened_command(
        args.image, name=name, port=args.port, env={"POD_NAME": "local"}, remove=True
    )
    os.execvp(command[0], command)


if __name__ == "__main__":
    raise SystemExit(main())
