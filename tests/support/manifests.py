"""Questions the manifest tests ask about the rendered overlays.

Rendering and reading the pod spec live in harness/deployment.py (the pod emulation and the
memory tool need them too) and are re-exported here, so a test reads one `manifests` module.
Schema checks use the offline, strict schemas that kubernetes-validate ships for each
Kubernetes release.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes_validate.utils import all_versions

from harness.deployment import (
    KUSTOMIZE_ROOT,
    Manifest,
    RenderError,
    container,
    describe,
    kustomize_command,
    only,
    overlay_dir,
    pod_spec,
    quantity,
    render,
    render_text,
)

__all__ = [
    "COMPONENTS",
    "KUSTOMIZE_ROOT",
    "OVERLAYS",
    "Manifest",
    "RenderError",
    "all_of",
    "container",
    "describe",
    "is_custom_resource",
    "kserve_predictor_service",
    "kustomize_command",
    "load_yaml",
    "only",
    "overlay_dir",
    "pod_labels",
    "pod_spec",
    "port_exists",
    "quantity",
    "render",
    "render_overlay_of",
    "render_text",
    "schema_error",
    "schema_versions",
    "selector_matches",
]

logger = logging.getLogger(__name__)

OVERLAYS = ("kind", "production")
# Every component, by its path under kustomize/components.
COMPONENTS = (
    "namespace",
    "production-resources",
    "gateway-api",
    "gateway-access/istio",
    "gateway-access/envoy-gateway",
    "gateway-access/cilium",
    "gateway-access/load-balancer-cidr",
    "servicemonitor",
    "grafana-dashboard",
    "bearer-tokens",
)
# The gateway-access components add the same peer in different ways: one at a time.
GATEWAY_ACCESS = tuple(name for name in COMPONENTS if name.startswith("gateway-access/"))

# Custom resources have no schema in kubernetes-validate; each is checked by its own test.
CUSTOM_RESOURCE_KINDS = frozenset(
    {
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("cilium.io/v2", "CiliumNetworkPolicy"),
    }
)


def render_overlay_of(
    workdir: Path,
    *,
    resources: Sequence[str] = ("../../base",),
    components: Sequence[str] = (),
    namespace: str | None = None,
    files: Sequence[Path] = (),
    extra: Mapping[str, Any] | None = None,
) -> list[Manifest]:
    """Render the throwaway overlay `overlay_of` writes (the same arguments)."""
    return render(
        overlay_of(
            workdir,
            resources=resources,
            components=components,
            namespace=namespace,
            files=files,
            extra=extra,
        )
    )


def overlay_of(
    workdir: Path,
    *,
    resources: Sequence[str] = ("../../base",),
    components: Sequence[str] = (),
    namespace: str | None = None,
    files: Sequence[Path] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """A throwaway overlay beside the real ones, in a copy of kustomize/ under `workdir`.

    `resources` and `components` are relative to the new overlay (`components` by name under
    kustomize/components); without `namespace` the overlay has no `namespace:` line, as the kind
    overlay has none. `files` are copied into the overlay (list them in `resources` to use
    them); `extra` adds fields (patches, replacements) as an overlay would.
    """
    tree = workdir / "kustomize"
    if not tree.exists():
        shutil.copytree(KUSTOMIZE_ROOT, tree)
    overlay = tree / "overlays" / "under-test"
    shutil.rmtree(overlay, ignore_errors=True)
    overlay.mkdir(parents=True)
    for path in files:
        shutil.copy(path, overlay / path.name)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(resources),
        "components": [f"../../components/{name}" for name in components],
        **(extra or {}),
    }
    if namespace is not None:
        kustomization["namespace"] = namespace
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return overlay


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


def all_of(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def pod_labels(deployment: Manifest) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"].get("labels", {})


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


# KServe's raw deployment mode names the Deployment and Service it makes for a predictor after
# the InferenceService, with this suffix, and serves the Service on port 80.
KSERVE_PREDICTOR_SUFFIX = "-predictor"
KSERVE_SERVICE_PORT = 80


def kserve_predictor_service(objects: Iterable[Manifest]) -> Manifest:
    """The Service KServe makes in raw mode for the InferenceService among `objects`: named
    `<name>-predictor`, labelled with the InferenceService's labels and the predictor's (which
    win), plus KServe's own, one port named after the runtime container's first port."""
    objects = list(objects)
    service = only(objects, "InferenceService")
    predictor = service["spec"]["predictor"]
    runtime = only(objects, "ServingRuntime")
    first_port = runtime["spec"]["containers"][0]["ports"][0]
    name = service["metadata"]["name"] + KSERVE_PREDICTOR_SUFFIX
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": service["metadata"]["namespace"],
            "labels": {
                **service["metadata"].get("labels", {}),
                **predictor.get("labels", {}),
                "serving.kserve.io/inferenceservice": service["metadata"]["name"],
                "component": "predictor",
            },
        },
        "spec": {
            "ports": [
                {
                    "name": first_port["name"],
                    "port": KSERVE_SERVICE_PORT,
                    "targetPort": first_port["containerPort"],
                }
            ]
        },
    }


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
