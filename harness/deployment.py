"""The service's Deployment as kustomize renders it, and the parts of its pod spec that say how
the container runs.

Every check starts from a render by kustomize itself (standalone when installed, else the copy
built into kubectl), never from the YAML files as written, except for the base Deployment's
hardening, which no overlay changes and which must be readable where kubectl is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from harness.processes import REPO_ROOT

KUSTOMIZE_ROOT = REPO_ROOT / "kustomize"
BASE_DEPLOYMENT = KUSTOMIZE_ROOT / "base" / "deployment.yaml"
# The service's container in the Deployment.
CONTAINER_NAME = "iris-classifier"

Manifest = dict[str, Any]


class RenderError(RuntimeError):
    """kustomize refused to build a kustomization."""


def kustomize_command() -> list[str] | None:
    """argv prefix that builds a kustomization, or None when neither tool is installed."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render_text(kustomization_dir: Path) -> str:
    """The multi-document YAML that kustomize builds from `kustomization_dir`."""
    command = kustomize_command()
    if command is None:
        raise RenderError("neither kustomize nor kubectl is on PATH")
    result = subprocess.run(
        [*command, str(kustomization_dir)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"{' '.join(command)} {kustomization_dir}: {result.stderr.strip()}")
    return result.stdout


def render(kustomization_dir: Path) -> list[Manifest]:
    """The objects kustomize builds from `kustomization_dir`, in its output order."""
    return [doc for doc in yaml.safe_load_all(render_text(kustomization_dir)) if doc]


def overlay_dir(overlay: str) -> Path:
    return KUSTOMIZE_ROOT / "overlays" / overlay


def base_deployment(path: Path = BASE_DEPLOYMENT) -> Manifest:
    """kustomize/base/deployment.yaml as written: one plain Deployment, no kustomize needed."""
    return yaml.safe_load(path.read_text())


def describe(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def only(manifests: Iterable[Manifest], kind: str) -> Manifest:
    """The single object of `kind`; fails if there is none or more than one."""
    found = [manifest for manifest in manifests if manifest["kind"] == kind]
    if len(found) != 1:
        raise LookupError(f"expected one {kind}, found {len(found)}")
    return found[0]


def pod_spec(deployment: Manifest) -> Manifest:
    return deployment["spec"]["template"]["spec"]


def container(deployment: Manifest, name: str) -> Manifest:
    for candidate in pod_spec(deployment)["containers"]:
        if candidate["name"] == name:
            return candidate
    raise LookupError(f"no container {name} in {describe(deployment)}")


_QUANTITY_UNITS = {
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
}


def quantity(value: str | float) -> float:
    """A Kubernetes resource quantity ("250m", "512Mi", 2) as a plain number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match or match.group(2) not in _QUANTITY_UNITS:
        raise ValueError(f"unsupported quantity {value!r}")
    return float(match.group(1)) * _QUANTITY_UNITS[match.group(2)]
