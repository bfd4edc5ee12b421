"""Check KServe objects against the KServe SDK's models, refusing any field they do not declare.

Run with build/kserve-venv's Python (tests/support/kserve_sdk.py), never the project's:

    build/kserve-venv/bin/python tests/support/kserve_schema_check.py MANIFESTS.yaml

Prints JSON: {"checked": ["InferenceService/name", ...], "errors": ["Kind/name at path: why"]}.
The SDK's own deserializer drops keys it does not know, which is how a misspelt field would
reach the cluster unnoticed; here every key of every object is looked up in the model's
`attribute_map` (KServe's models, and the Kubernetes client's for the pod spec inside them),
and every value is checked against the type the model's `openapi_types` gives it.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from typing import Any

import kserve
import kubernetes.client
import yaml

MODELS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
}
SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "date": (str, datetime.date),
    "datetime": (str, datetime.datetime),
    "bytes": (str,),
    # A Kubernetes quantity: "250m", "1Gi" or a plain number.
    "ResourceQuantity": (str, int, float),
}
# KServe's models write list[T] and dict(str, T); the Kubernetes client's List[T], Dict[str, T].
LIST = re.compile(r"^(?:list|List)\[(.+)\]$")
DICT = re.compile(r"^(?:dict\(([^,]+), (.+)\)|Dict\[([^,]+), (.+)\])$")


def model_class(name: str) -> type:
    for module in (kserve, kserve.models, kubernetes.client):
        found = getattr(module, name, None)
        if found is not None:
            return found
    raise LookupError(f"no model named {name} in the kserve or kubernetes packages")


def check(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    if type_name == "object":  # IntOrString and free-form fields: any JSON value
        return
    if type_name in SCALARS:
        # bool is an int in Python; YAML's true is no number and 3 is no boolean.
        wrong_bool = isinstance(value, bool) and type_name != "bool"
        if wrong_bool or not isinstance(value, SCALARS[type_name]):
            errors.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    if match := LIST.match(type_name):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            check(item, match.group(1), f"{path}[{index}]", errors)
        return
    if match := DICT.match(type_name):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        key_type, item_type = (group for group in match.groups() if group is not None)
        for key, item in value.items():
            check(key, key_type, f"{path}.{key} (key)", errors)
            check(item, item_type, f"{path}.{key}", errors)
        return
    cls = model_class(type_name)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {type_name} mapping, got {type(value).__name__}")
        return
    attributes = {json_name: attribute for attribute, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in attributes:
            errors.append(f"{path}.{key}: unknown field (not in {type_name})")
            continue
        check(item, cls.openapi_types[attributes[key]], f"{path}.{key}", errors)


def object_errors(manifest: dict[str, Any]) -> list[str]:
    model = MODELS[manifest["apiVersion"], manifest["kind"]]
    where = f"{manifest['kind']}/{manifest.get('metadata', {}).get('name')}"
    errors: list[str] = []
    check(manifest, model, "", errors)
    return [f"{where} at {error.lstrip('.') or '(top level)'}" for error in errors]


def main(path: str) -> int:
    with open(path) as file:
        manifests = [doc for doc in yaml.safe_load_all(file) if doc]
    report: dict[str, list[str]] = {"checked": [], "errors": []}
    for manifest in manifests:
        if (manifest.get("apiVersion"), manifest.get("kind")) in MODELS:
            report["checked"].append(f"{manifest['kind']}/{manifest['metadata']['name']}")
            report["errors"] += object_errors(manifest)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
