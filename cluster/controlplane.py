"""A Kubernetes control plane on 127.0.0.1, from the commands `cluster/build.sh` builds.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real ones, so
admission (Pod Security among it), server-side apply and dry-run, CRD schemas and CEL rules,
scheduling, Deployments, ReplicaSets, disruption budgets and EndpointSlices behave as in any
cluster. With `nodes=True`, kwok plays the kubelets of a control-plane node and two workers named
as kind names them: it marks scheduled pods Running and Ready without running a container or a
probe, and keeps the nodes' leases fresh. That is an emulation of nodes, not a cluster: nothing
here pulls an image, starts a container, or routes a packet.

    python -m cluster.controlplane [--nodes]   # runs until Ctrl-C; prints a KUBECONFIG to use
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.processes import free_port, start, stop_tree

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
CLUSTER_NAME = "iris-classifier"
# As kind names the nodes of kustomize/overlays/kind/kind-config.yaml.
CONTROL_PLANE_NODE = f"{CLUSTER_NAME}-control-plane"
WORKER_NODES = (f"{CLUSTER_NAME}-worker", f"{CLUSTER_NAME}-worker2")
SERVICE_CIDR = "10.96.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def commands_dir() -> Path:
    """Where `cluster/build.sh` puts this release's commands (bin/) and kwok's stages."""
    result = subprocess.run(
        [str(HERE / "build.sh"), "--print-dir"], capture_output=True, text=True, check=True
    )
    return Path(result.stdout.strip())


def missing_commands(directory: Path) -> str | None:
    """Why the commands in `directory` cannot be used, or None when they are all there."""
    if not (directory / ".complete").exists():
        return f"the cluster commands are not built in {directory}: run make cluster-commands"
    return None


@dataclasses.dataclass(frozen=True)
class ControlPlane:
    directory: Path
    bin: Path
    kubeconfig: Path

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run this release's kubectl against the control plane."""
        result = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} exited with {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def get(self, *args: str) -> dict:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def _write_keys(directory: Path) -> None:
    # The service-account token signer: the API server verifies with the public half, and the
    # controller manager signs the tokens of the ServiceAccounts' Secrets with the private one.
    subprocess.run(
        ["openssl", "genrsa", "-out", str(directory / "service-account.key"), "2048"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "rsa",
            "-in",
            str(directory / "service-account.key"),
            "-pubout",
            "-out",
            str(directory / "service-account.pub"),
        ],
        check=True,
        capture_output=True,
    )


def _write_kubeconfig(path: Path, server: str, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            # The API server's certificate is the self-signed one it makes at start.
            {"name": CLUSTER_NAME, "cluster": {"server": server, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": "admin"}}],
        "current-context": CLUSTER_NAME,
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def _wait(what: str, check, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{what} exited with code {process.returncode}:\n{tail}")
        if check():
            return
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s:\n{tail}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _node(name: str, *, control_plane: bool) -> dict:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    taints = []
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
        taints.append({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
    capacity = {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
        },
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


@contextlib.contextmanager
def running(directory: Path, commands: Path, *, nodes: bool = False) -> Iterator[ControlPlane]:
    """Run a control plane in `directory` until the block ends, then stop every process."""
    bin_dir = commands / "bin"
    directory.mkdir(parents=True, exist_ok=True)
    _write_keys(directory)
    token = secrets.token_hex(16)
    # The one user: the static admin in system:masters, as kubeadm's admin.conf is.
    (directory / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    (directory / "tokens.csv").chmod(0o600)
    etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = directory / "kubeconfig"
    _write_kubeconfig(kubeconfig, server, token)
    plane = ControlPlane(directory=directory, bin=bin_dir, kubeconfig=kubeconfig)
    processes: list[subprocess.Popen[bytes]] = []

    def launch(name: str, argv: Sequence[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = directory / f"{name}.log"
        process = start([str(bin_dir / argv[0]), *argv[1:]], log_path=log, cwd=directory)
        processes.append(process)
        return process, log

    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer_port}"
        etcd, etcd_log = launch(
            "etcd",
            [
                "etcd",
                "--name=default",
                f"--data-dir={directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # A throwaway store for tests: losing it on a power cut costs nothing.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        apiserver, apiserver_log = launch(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={directory / 'apiserver'}",
                f"--token-auth-file={directory / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={directory / 'service-account.pub'}",
                f"--service-account-signing-key-file={directory / 'service-account.key'}",
                # The `kubernetes` Service's endpoint would be 127.0.0.1, which EndpointSlices
                # refuse; nothing in the tests calls the API server from a pod.
                "--endpoint-reconciler-type=none",
            ],
        )
        _wait("etcd", lambda: _answers(f"{etcd_url}/health"), etcd, etcd_log, 30)
        _wait(
            "kube-apiserver",
            lambda: plane.kubectl("get", "--raw=/readyz", check=False, timeout=10).returncode == 0,
            apiserver,
            apiserver_log,
            120,
        )
        controller_manager, controller_manager_log = launch(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={directory / 'service-account.key'}",
                f"--root-ca-file={directory / 'apiserver' / 'apiserver.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )
        launch(
            "kube-scheduler",
            [
                "kube-scheduler",
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )
        if nodes:
            launch(
                "kwok",
                [
                    "kwok",
                    f"--kubeconfig={kubeconfig}",
                    f"--config={commands / 'stages.yaml'}",
                    "--manage-all-nodes=false",
                    f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                    "--cidr=10.244.0.0/16",
                    "--node-ip=10.89.0.1",
                ],
            )
            node_list = {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    _node(CONTROL_PLANE_NODE, control_plane=True),
                    *(_node(name, control_plane=False) for name in WORKER_NODES),
                ],
            }
            plane.kubectl("apply", "-f", "-", stdin=json.dumps(node_list))
            plane.kubectl(
                "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=120s", timeout=130
            )
        # The ServiceAccount admission needs the namespace's default ServiceAccount, which the
        # controller manager creates: wait for it so the first apply is not refused.
        _wait(
            "kube-controller-manager",
            lambda: plane.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            controller_manager,
            controller_manager_log,
            120,
        )
        yield plane
    finally:
        for process in reversed(processes):
            stop_tree(process.pid, grace=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.controlplane",
        description="Run a control plane on 127.0.0.1 (etcd, API server, controller manager, "
        "scheduler) until Ctrl-C.",
    )
    parser.add_argument(
        "--nodes",
        action="store_true",
        help="also run kwok with a control-plane node and two workers (emulated kubelets: no "
        "container runs)",
    )
    parser.add_argument(
        "--directory",
        type=Path,
        default=None,
        help="where the keys, logs and kubeconfig go (default: a new temporary directory)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    commands = commands_dir()
    if reason := missing_commands(commands):
        logger.error(reason)
        return 1
    directory = args.directory or Path(tempfile.mkdtemp(prefix="iris-control-plane-"))
    with running(directory, commands, nodes=args.nodes) as plane:
        logger.info("control plane up: export KUBECONFIG=%s (Ctrl-C stops it)", plane.kubeconfig)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
