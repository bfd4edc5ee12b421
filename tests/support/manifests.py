"""Render the kustomize overlays and answer questions about the objects they produce.

The manifests are only worth what the cluster will accept and what the service really
does, so every check starts from a render by kustomize itself (standalone when installed,
else the copy built into kubectl), never from the YAML files as written. Schema checks use
the offline, strict schemas that kubernetes-validate ships for each Kubernetes release.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes_validate.utils import all_versions

from benchmarks.processes import REPO_ROOT

logger = logging.getLogger(__name__)

KUSTOMIZE_ROOT = REPO_ROOT / "kustomize"
OVERLAYS = ("kind", "production")
COMPONENTS = ("gateway-api", "servicemonitor", "grafana-dashboard")

Manifest = dict[str, Any]

# Custom resources have no schema in kubernetes-validate; each is checked by its own test.
CUSTOM_RESOURCE_KINDS = frozenset(
    {
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    }
)


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


def schema_versions(oldest: str = "1.29") -> list[str]:
    """Every Kubernetes minor release from `oldest` on that kubernetes-validate has schemas for."""
    minors = {".".join(version.split(".")[:2]) for version in all_versions()}
    return sorted(
        (minor for minor in minors if _minor_key(minor) >= _minor_key(oldest)), key=_minor_key
    )


def _minor_key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def schema_error(manifest: Manifest, version: str) -> str | None:
    """Why the strict schema of Kubernetes `version` rejects `manifest`, or None if it passes.

    Strict means no field the API does not know: a misspelt key fails here instead of being
    silently dropped by the API server.
    """
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path) or "(top level)"
        return f"{describe(manifest)} at {where}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError as error:
        return f"{describe(manifest)}: {error.message}"
    return None


def is_custom_resource(manifest: Manifest) -> bool:
    return (manifest["apiVersion"], manifest["kind"]) in CUSTOM_RESOURCE_KINDS


def describe(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def only(manifests: Iterable[Manifest], kind: str) -> Manifest:
    """The single object of `kind`; fails if there is none or more than one."""
    found = [manifest for manifest in manifests if manifest["kind"] == kind]
    if len(found) != 1:
        raise LookupError(f"expected one {kind}, found {len(found)}")
    return found[0]


def all_of(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def pod_spec(deployment: Manifest) -> Manifest:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: Manifest) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"].get("labels", {})


def container(deployment: Manifest, name: str) -> Manifest:
    for candidate in pod_spec(deployment)["containers"]:
        if candidate["name"] == name:
            return candidate
    raise LookupError(f"no container {name} in {describe(deployment)}")


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects `labels`.

    An empty selector selects everything, as in the API; callers that must not accept that
    check for it themselves.
    """
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def port_exists(target: int | str, container_spec: Manifest) -> bool:
    """Whether a Service or probe port (a number or a port name) exists on the container."""
    ports = container_spec.get("ports", [])
    if isinstance(target, int):
        return any(port["containerPort"] == target for port in ports)
    return any(port.get("name") == target for port in ports)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


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
